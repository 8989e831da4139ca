/*
 * raw_deep.c -- a batch of records behind a "clean shutdown" flag, made durable with a deep
 * flush (clwb, sfence, then the write to the region's deep_flush file on a device-DAX
 * system; here the program tells pmemcheck with VALGRIND_PMC_DEEP_SYNC, which the log
 * shows as a DEEP_SYNC record).
 *
 * Records are written without flushing; the batch is made durable at close, when the
 * header's `clean` flag and record count are set. Recovery trusts the records only after a
 * clean close.
 *
 *   raw_deep bug|fixed POOL
 *
 * bug: close deep-flushes only the header: the records were never flushed.
 * fixed: close deep-flushes the records first, then stores and deep-flushes the header.
 */
#include "pool.h"

#define POOL_SIZE 4096
#define MAGIC 0x50454544574152ULL /* "RAWDEEP" */
#define NREC 6

struct header {
	uint64_t magic;
	uint64_t clean;
	uint64_t nrec;
	uint64_t unused[5];
};

struct record {
	uint64_t id;
	uint64_t payload[2];
	uint64_t sum;
};

struct batch {
	struct header h;
	struct record rec[NREC];
};

static void
deep_flush(const void *addr, size_t len)
{
	flush_clwb(addr, len);
	_mm_sfence();
	VALGRIND_PMC_DEEP_SYNC(addr, len);
}

static void
put(struct record *r, uint64_t id)
{
	r->id = id;
	r->payload[0] = id * 1000;
	r->payload[1] = id * 1000 + 1;
	r->sum = r->id + r->payload[0] + r->payload[1]; /* LOST: raw_deep record sum */
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed POOL\n", argv[0]);
		return 2;
	}
	int fixed = strcmp(argv[1], "fixed") == 0;
	struct batch *b = pool_create(argv[2], POOL_SIZE);
	b->h.magic = MAGIC;
	deep_flush(&b->h, sizeof(b->h));
	for (uint64_t i = 0; i < NREC; i++)
		put(&b->rec[i], i + 1);
	if (fixed)
		deep_flush(b->rec, sizeof(b->rec));
	b->h.nrec = NREC;
	b->h.clean = 1;
	deep_flush(&b->h, sizeof(b->h));
	return 0;
}
