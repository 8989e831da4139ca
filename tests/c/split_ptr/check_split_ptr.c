/* The recovery of split_ptr (hm_atomic_init's order): a null table (offset 0) takes tmp;
 * a pointer that is not null must then be usable, its tag the pool's. Library: int
 * check(const char *path), 1 consistent; built without -DCHECKER_LIB, a checker program. */
#include <stdio.h>
#include "split_ptr.h"

int check(const char *path)
{
	struct root r;
	FILE *f = fopen(path, "rb");
	size_t got = f ? fread(&r, sizeof(r), 1, f) : 0;
	if (f)
		fclose(f);
	if (got != 1)
		return 0;
	struct ptr live = r.table.off == 0 ? r.tmp : r.table;
	if (live.off == 0)
		return 1; /* nothing made yet */
	if (live.tag != TAG) {
		fprintf(stderr, "table pointer {%#lx, %#lx}: not this pool's\n",
			(unsigned long)live.tag, (unsigned long)live.off);
		return 0;
	}
	return live.off == 0x100 || live.off == 0x200;
}

#ifndef CHECKER_LIB
int main(int argc, char **argv)
{
	return check(argv[argc - 1]) ? 0 : 1;
}
#endif
