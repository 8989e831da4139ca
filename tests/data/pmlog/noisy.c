/* Writes its own lines to stderr (and stdout) while pmemcheck logs: captured with 2>&1, they
 * land inside the record line, between two of valgrind's 512-character chunks. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <emmintrin.h>
#include <valgrind/pmemcheck.h>
int main(int argc, char **argv)
{
	fprintf(stderr, "opening %s\n", argv[1]);
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096)) return 1;
	char *base = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(base, 4096);
	VALGRIND_PMC_REGISTER_PMEM_FILE(fd, base, 4096, 0);
	for (int i = 0; i < 40; i++) {
		((uint64_t *)base)[i] = i;
		_mm_clflush(base + 8 * i);
		if (i % 10 == 0) fprintf(stderr, "stored %d\n", i);
	}
	printf("done\n");
	return 0;
}
