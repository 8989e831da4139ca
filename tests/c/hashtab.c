/*
 * hashtab.c -- an open-addressing hash table on a raw mapping (linear probing, insert only),
 * each slot guarded by a valid flag. Big enough for a corpus log of a few hundred stores.
 *
 *   hashtab bug|fixed|oneline POOL
 *
 * bug, fixed: 128-byte slots: line A holds the valid flag, the key and a checksum, line B the
 *   value. bug stores key, value, checksum and flag and then persists the slot once: the
 *   flag's line may persist before the value's line. fixed persists the slot, fences, and
 *   only then sets and persists the flag.
 * oneline: 64-byte slots, flag and all in one line, stored last, the slot persisted once.
 *   Correct on x86: a line's stores persist in program order, so the flag never persists
 *   without the fields stored before it (pmreorder, which reorders them, reports a bug).
 */
#include "pool.h"

#define POOL_SIZE 8192
#define MAGIC 0x424154485341482ULL /* "HASHTAB" */

struct wide_slot {
	uint64_t valid;
	uint64_t key;
	uint64_t sum;
	uint64_t unused[5];
	uint64_t value[8];
};

struct narrow_slot {
	uint64_t key;
	uint64_t value[5];
	uint64_t sum;
	uint64_t valid;
};

struct table {
	uint64_t magic;
	uint64_t slot_size;
	uint64_t nslots;
	uint64_t unused[5];
};

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static void
persist(const void *addr, size_t len)
{
	flush_clwb(addr, len);
	_mm_sfence();
}

static void
insert_wide(struct table *t, uint64_t key, int fixed)
{
	struct wide_slot *slots = (struct wide_slot *)((char *)t + LINE);
	uint64_t i = mix(key) % t->nslots;
	while (slots[i].valid)
		i = (i + 1) % t->nslots;
	struct wide_slot *s = &slots[i];
	s->key = key;
	for (int j = 0; j < 8; j++)
		s->value[j] = key * 8 + (uint64_t)j; /* LOST: hashtab value */
	s->sum = mix(key ^ s->value[7]);
	if (fixed)
		persist(s, sizeof(*s));
	s->valid = 1;
	persist(s, fixed ? sizeof(s->valid) : sizeof(*s));
}

static void
insert_narrow(struct table *t, uint64_t key)
{
	struct narrow_slot *slots = (struct narrow_slot *)((char *)t + LINE);
	uint64_t i = mix(key) % t->nslots;
	while (slots[i].valid)
		i = (i + 1) % t->nslots;
	struct narrow_slot *s = &slots[i];
	s->key = key;
	for (int j = 0; j < 5; j++)
		s->value[j] = key * 8 + (uint64_t)j;
	s->sum = mix(key ^ s->value[4]);
	s->valid = 1;
	persist(s, sizeof(*s));
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed|oneline POOL\n", argv[0]);
		return 2;
	}
	int narrow = strcmp(argv[1], "oneline") == 0;
	int fixed = strcmp(argv[1], "fixed") == 0;
	struct table *t = pool_create(argv[2], POOL_SIZE);
	t->slot_size = narrow ? sizeof(struct narrow_slot) : sizeof(struct wide_slot);
	t->nslots = (POOL_SIZE - LINE) / t->slot_size;
	t->magic = MAGIC;
	persist(t, sizeof(*t));
	for (uint64_t k = 1; k <= 24; k++) {
		uint64_t key = k * 7919;
		if (narrow)
			insert_narrow(t, key);
		else
			insert_wide(t, key, fixed);
	}
	return 0;
}
