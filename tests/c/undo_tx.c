/*
 * undo_tx.c -- transfers between accounts under an undo log, with the program's own markers
 * (VALGRIND_PMC_EMIT_LOG "NAME.BEGIN" / "NAME.END"), the way pmreorder users mark phases so
 * that a checker (through PMREORDER_MARKERS) or an engine per marker knows what was under way.
 *
 * Line 0: magic. Line 1: the undo log (which two accounts, their old balances, a valid
 * flag stored last). Lines 2..5: one account each. A transfer snapshots both balances into
 * the log, persists it, then changes the balances, persists them and clears the log.
 * Recovery rolls back a valid log; the balances then always sum to the initial total.
 *
 *   undo_tx bug|fixed POOL
 *
 * bug: the log is cleared (commit) before the new balances are flushed: a crash can keep
 * one account's new balance and the other's old one, with no log left to undo it.
 * fixed: the balances are persisted before the commit.
 */
#include "pool.h"

#define POOL_SIZE 4096
#define MAGIC 0x58544f444e55ULL /* "UNDOTX" */
#define NACCT 4

struct undo {
	uint64_t a, old_a, b, old_b;
	uint64_t unused[3];
	uint64_t valid;
};

struct account {
	uint64_t balance;
	uint64_t unused[7];
};

struct bank {
	uint64_t magic;
	uint64_t unused[7];
	struct undo log;
	struct account acct[NACCT];
};

static void
persist(const void *addr, size_t len)
{
	flush_clwb(addr, len);
	_mm_sfence();
}

static void
transfer(struct bank *bk, uint64_t a, uint64_t b, uint64_t amount, int fixed)
{
	VALGRIND_PMC_EMIT_LOG("transfer.BEGIN");
	VALGRIND_PMC_EMIT_LOG("snapshot.BEGIN");
	bk->log.a = a;
	bk->log.old_a = bk->acct[a].balance;
	bk->log.b = b;
	bk->log.old_b = bk->acct[b].balance;
	bk->log.valid = 1;
	persist(&bk->log, sizeof(bk->log));
	VALGRIND_PMC_EMIT_LOG("snapshot.END");
	bk->acct[a].balance -= amount; /* LOST: undo_tx debit */
	bk->acct[b].balance += amount; /* LOST: undo_tx credit */
	if (fixed) {
		persist(&bk->acct[a], sizeof(uint64_t));
		persist(&bk->acct[b], sizeof(uint64_t));
	}
	VALGRIND_PMC_EMIT_LOG("commit.BEGIN");
	bk->log.valid = 0;
	persist(&bk->log.valid, sizeof(uint64_t));
	VALGRIND_PMC_EMIT_LOG("commit.END");
	if (!fixed) {
		persist(&bk->acct[a], sizeof(uint64_t));
		persist(&bk->acct[b], sizeof(uint64_t));
	}
	VALGRIND_PMC_EMIT_LOG("transfer.END");
}

int
main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s bug|fixed POOL\n", argv[0]);
		return 2;
	}
	int fixed = strcmp(argv[1], "fixed") == 0;
	struct bank *bk = pool_create(argv[2], POOL_SIZE);
	VALGRIND_PMC_EMIT_LOG("init.BEGIN");
	for (int i = 0; i < NACCT; i++) {
		bk->acct[i].balance = 100;
		persist(&bk->acct[i], sizeof(uint64_t));
	}
	bk->magic = MAGIC;
	persist(&bk->magic, sizeof(bk->magic));
	VALGRIND_PMC_EMIT_LOG("init.END");
	transfer(bk, 0, 1, 30, fixed);
	transfer(bk, 2, 0, 50, fixed);
	transfer(bk, 3, 1, 70, fixed);
	return 0;
}
