/* Data in one file, a valid flag in another: the flag is persisted before the data is
 * flushed (bug) unless argv[3] == "fixed". Also a DEEP_SYNC of the flag, and a store to
 * an unregistered mapping (left out by check-log). */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <emmintrin.h>
#include <valgrind/pmemcheck.h>

static char *map_file(const char *path, int *fdp)
{
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096))
		return NULL;
	char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(p, 4096);
	VALGRIND_PMC_REGISTER_PMEM_FILE(fd, p, 4096, 0);
	*fdp = fd;
	return p;
}

int main(int argc, char **argv)
{
	int fd1, fd2;
	char *data = map_file(argv[1], &fd1);
	char *flag = map_file(argv[2], &fd2);
	int fixed = argc > 3 && strcmp(argv[3], "fixed") == 0;
	char *scratch = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(scratch, 4096);
	*(uint64_t *)scratch = 7; /* persistent memory, but no registered file */
	*(uint64_t *)data = 0x1234;
	if (fixed) {
		_mm_clflush(data);
		_mm_sfence();
	}
	*(uint64_t *)flag = 1;
	_mm_clflush(flag);
	_mm_sfence();
	VALGRIND_PMC_DEEP_SYNC(flag, 64);
	if (!fixed) {
		_mm_clflush(data);
		_mm_sfence();
	}
	return 0;
}
