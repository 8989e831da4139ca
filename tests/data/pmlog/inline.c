/* Two stores through an inlined helper (valgrind writes inlined frames back to back). */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include <emmintrin.h>
#include <valgrind/pmemcheck.h>
static inline void put(uint64_t *p, uint64_t v) { *p = v; _mm_clflush(p); }
__attribute__((noinline)) void outer(char *base) { put((uint64_t *)(base + 8), 5); put((uint64_t *)(base + 72), 6); }
int main(int argc, char **argv) {
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096)) return 1;
	char *base = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(base, 4096);
	VALGRIND_PMC_REGISTER_PMEM_FILE(fd, base, 4096, 0);
	outer(base);
	_mm_sfence();
	return 0;
}
