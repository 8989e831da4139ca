/*
 * A tiny libpmemobj program: appends items to a log kept in the root object, one
 * transaction per item (a transactional allocation, the item's fields, the slot and the
 * count). `obj_log POOL N` creates POOL when it is missing and appends N items.
 * Built with -DFORGET_COUNT it stores the count without adding it to the transaction:
 * an abort (or a crash before commit) rolls back the slot but not the count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "obj_log.h"

static int append(PMEMobjpool *pop, struct obj_log_root *root)
{
	int failed = 0;
	TX_BEGIN(pop) {
		uint64_t n = root->count;
		if (n == OBJ_LOG_SLOTS)
			pmemobj_tx_abort(ENOSPC);
		PMEMoid oid = pmemobj_tx_alloc(sizeof(struct obj_log_item), OBJ_LOG_ITEM_TYPE);
		struct obj_log_item *item = pmemobj_direct(oid);
		item->value = obj_log_value(n);
		item->check = ~item->value;
		pmemobj_tx_add_range_direct(&root->items[n], sizeof(PMEMoid));
		root->items[n] = oid;
#ifndef FORGET_COUNT
		pmemobj_tx_add_range_direct(&root->count, sizeof(root->count));
#endif
		root->count = n + 1;
	} TX_ONABORT {
		failed = 1;
	} TX_END
	return failed;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s POOL N\n", argv[0]);
		return 2;
	}
	PMEMobjpool *pop = access(argv[1], F_OK) == 0
		? pmemobj_open(argv[1], OBJ_LOG_LAYOUT)
		: pmemobj_create(argv[1], OBJ_LOG_LAYOUT, PMEMOBJ_MIN_POOL, 0600);
	if (pop == NULL) {
		fprintf(stderr, "%s: %s\n", argv[1], pmemobj_errormsg());
		return 1;
	}
	PMEMoid r = pmemobj_root(pop, sizeof(struct obj_log_root));
	struct obj_log_root *root = pmemobj_direct(r);
	int status = 0;
	for (long i = atol(argv[2]); i > 0 && status == 0; i--)
		status = append(pop, root);
	pmemobj_close(pop);
	return status;
}
