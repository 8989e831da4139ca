/*
 * raw_tail.c -- an append-only table on a raw mapping, flushed with clwb.
 *
 * The header (line 0) holds a magic word, `tail` (slots handed out) and `count` (records
 * published). Records are 32 bytes, two to a line, from line 1 on. An append fills the next
 * slot, persists the new tail, then publishes the record by persisting count.
 *
 *   raw_tail bug|fixed POOL
 *
 * bug: the record itself is never flushed; only `clwb(&h->tail)` runs before the first
 * fence. That flush is issued at offset 8, and pmemcheck logs it as FLUSH;base+0x8;0x40, a
 * range that reaches into line 1 where the records are, although clwb writes back only the
 * line holding its operand (line 0). A reader that flushes every line of the range thinks
 * the records are durable and misses the bug; with --flush-align=yes the range is line 0.
 */
#include "pool.h"

#define POOL_SIZE 4096
#define MAGIC 0x4c494154574152ULL /* "RAWTAIL" */
#define SEED 0x9e3779b97f4a7c15ULL

struct header {
	uint64_t magic;
	uint64_t tail;
	uint64_t count;
	uint64_t unused[5];
};

struct record {
	uint64_t key;
	uint64_t value;
	uint64_t sum;
	uint64_t unused;
};

struct table {
	struct header h;
	struct record rec[(POOL_SIZE - LINE) / sizeof(struct record)];
};

static void
append(struct table *t, uint64_t key, uint64_t value, int fixed)
{
	struct header *h = &t->h;
	struct record *r = &t->rec[h->tail];
	r->key = key;
	r->value = value;
	r->sum = key ^ value ^ SEED; /* LOST: raw_tail record sum */
	if (fixed)
		flush_clwb(r, sizeof(*r));
	h->tail = h->tail + 1;
	_mm_clwb(&h->tail);
	_mm_sfence();
	h->count = h->tail;
	_mm_clwb(&h->count);
	_mm_sfence();
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed POOL\n", argv[0]);
		return 2;
	}
	int fixed = strcmp(argv[1], "fixed") == 0;
	struct table *t = pool_create(argv[2], POOL_SIZE);
	t->h.magic = MAGIC;
	_mm_clwb(&t->h.magic);
	_mm_sfence();
	append(t, 1, 100, fixed);
	append(t, 2, 200, fixed);
	return 0;
}
