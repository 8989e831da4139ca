/* A header (magic, count) in line 0 and a record in line 1 of one 4 KiB file.
 * Bug (default): the record is stored but only the header's count is flushed; an
 * unaligned clflush(&h->count) logs FLUSH;base+0x8;0x40, whose range reaches into the
 * record's line although the instruction flushes line 0 only.
 * Fixed (argv[2] == "fixed"): the record's line is flushed and fenced first. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <emmintrin.h>
#include <valgrind/pmemcheck.h>

struct hdr { uint64_t magic; uint64_t count; };

static void append_record(char *base, uint64_t value, int fixed)
{
	struct hdr *h = (struct hdr *)base;
	uint64_t *rec = (uint64_t *)(base + 0x40);
	VALGRIND_PMC_EMIT_LOG("append.BEGIN");
	*rec = value;
	if (fixed) {
		_mm_clflush(rec);
		_mm_sfence();
	}
	h->count = 1;
	_mm_clflush(&h->count);
	_mm_sfence();
	VALGRIND_PMC_EMIT_LOG("append.END");
}

int main(int argc, char **argv)
{
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096))
		return 1;
	char *base = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return 1;
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(base, 4096);
	VALGRIND_PMC_REGISTER_PMEM_FILE(fd, base, 4096, 0);
	append_record(base, 42, argc > 2 && strcmp(argv[2], "fixed") == 0);
	munmap(base, 4096);
	close(fd);
	return 0;
}
