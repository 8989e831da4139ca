/*
 * two_files.c -- a pool of two files: records go to a data file, and a metadata file says how
 * many of them are committed (a layout like a database's data file plus its control file).
 *
 * data: 64-byte records {seq, value, sum, ...}, one per line. meta: {magic, committed}.
 * Both files are mapped and registered with pmemcheck: the log has two REGISTER_FILE records.
 *
 *   two_files bug|fixed DATA META
 *
 * bug: the record is flushed but not fenced before the commit count is stored and persisted:
 * under one fence the count's line in the other file may persist first.
 * fixed: clwb, sfence, then the count.
 */
#include "pool.h"

#define DATA_SIZE 4096
#define META_SIZE 4096
#define MAGIC 0x41544144495451ULL /* "QTIDATA" */
#define NREC 4

struct record {
	uint64_t seq;
	uint64_t value;
	uint64_t sum;
	uint64_t unused[5];
};

struct meta {
	uint64_t magic;
	uint64_t committed;
};

static void
append(struct record *data, struct meta *m, uint64_t value, int fixed)
{
	struct record *r = &data[m->committed];
	r->seq = m->committed + 1;
	r->value = value;
	r->sum = r->seq * 31 + value; /* LOST: two_files record sum */
	flush_clwb(r, sizeof(*r));
	if (fixed)
		_mm_sfence();
	m->committed = m->committed + 1;
	flush_clwb(&m->committed, sizeof(m->committed));
	_mm_sfence();
}

int
main(int argc, char *argv[])
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s bug|fixed DATA META\n", argv[0]);
		return 2;
	}
	int fixed = strcmp(argv[1], "fixed") == 0;
	struct record *data = pool_create(argv[2], DATA_SIZE);
	struct meta *m = pool_create(argv[3], META_SIZE);
	m->magic = MAGIC;
	flush_clwb(m, sizeof(*m));
	_mm_sfence();
	for (uint64_t i = 0; i < NREC; i++)
		append(data, m, 1000 + i, fixed);
	return 0;
}
