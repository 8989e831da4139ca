/*
 * raw_flag.c -- a settings blob published by a valid flag, flushed with clflushopt.
 *
 * Line 0 holds the flag, the length and a checksum; the text is copied (memcpy) from line 1
 * on. A reader trusts the text whenever the flag is set.
 *
 *   raw_flag bug|fixed POOL
 *
 * bug: text, length, checksum and flag are all stored, then everything is flushed and fenced
 * once. The flag's line can be written back (evicted, or flushed first) before the text's
 * lines: a crash leaves the flag set over missing text.
 * fixed: the text and its checksum are flushed and fenced before the flag is stored.
 */
#include "pool.h"

#define POOL_SIZE 4096

struct blob {
	uint64_t valid;
	uint64_t len;
	uint64_t sum;
	uint64_t unused[5];
	char text[POOL_SIZE - LINE];
};

static uint64_t
text_sum(const char *text, size_t len)
{
	uint64_t s = 1469598103934665603ULL; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		s = (s ^ (unsigned char)text[i]) * 1099511628211ULL;
	return s;
}

static void
publish(struct blob *b, const char *text, int fixed)
{
	size_t len = strlen(text);
	memcpy(b->text, text, len); /* LOST: raw_flag text */
	b->len = len;
	b->sum = text_sum(text, len);
	if (fixed) {
		flush_clflushopt(b->text, len);
		flush_clflushopt(b, LINE);
		_mm_sfence();
	}
	b->valid = 1;
	if (!fixed)
		flush_clflushopt(b->text, len);
	flush_clflushopt(&b->valid, sizeof(b->valid));
	_mm_sfence();
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed POOL\n", argv[0]);
		return 2;
	}
	struct blob *b = pool_create(argv[2], POOL_SIZE);
	publish(b,
		"listen=0.0.0.0:7000 workers=8 pool=/mnt/pmem0/kv "
		"log_level=info sync=always max_keys=65536",
		strcmp(argv[1], "fixed") == 0);
	return 0;
}
