/*
 * Checker for obj_log's pool: it opens the image with libpmemobj (which runs the
 * transaction recovery) and requires count <= OBJ_LOG_SLOTS, an intact item in every slot
 * below count, none above, and no item allocated outside the slots (no leak).
 * `int check(const char *path)` returns 1 for consistent (pmemsim's --checker-lib);
 * built with -DMAIN it is a program exiting 0 for consistent.
 */
#include <stdio.h>
#include "obj_log.h"

int check(const char *path)
{
	PMEMobjpool *pop = pmemobj_open(path, OBJ_LOG_LAYOUT);
	if (pop == NULL)
		return 0;
	int ok = 1;
	if (pmemobj_root_size(pop) != 0) {
		struct obj_log_root *root =
			pmemobj_direct(pmemobj_root(pop, sizeof(struct obj_log_root)));
		uint64_t n = root->count;
		ok = n <= OBJ_LOG_SLOTS;
		for (uint64_t i = 0; ok && i < OBJ_LOG_SLOTS; i++) {
			PMEMoid oid = root->items[i];
			if (i >= n) {
				ok = OID_IS_NULL(oid);
				continue;
			}
			struct obj_log_item *item = pmemobj_direct(oid);
			ok = item != NULL && pmemobj_type_num(oid) == OBJ_LOG_ITEM_TYPE &&
				item->value == obj_log_value(i) && item->check == ~item->value;
		}
		uint64_t allocated = 0;
		for (PMEMoid o = pmemobj_first(pop); ok && !OID_IS_NULL(o); o = pmemobj_next(o))
			allocated += pmemobj_type_num(o) == OBJ_LOG_ITEM_TYPE;
		ok = ok && allocated == n;
	}
	pmemobj_close(pop);
	return ok;
}

#ifdef MAIN
int main(int argc, char **argv)
{
	return argc > 1 && check(argv[argc - 1]) == 1 ? 0 : 1;
}
#endif
