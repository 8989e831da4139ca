/* check_raw_deep.c -- after raw_deep.c's clean close every record is whole. */
#include "image.h"
#include "checker_main.h"

#define MAGIC 0x50454544574152ULL

int
check(const char *path)
{
	size_t size = 0;
	uint64_t *w = (uint64_t *)image_read(path, &size);
	if (w == NULL || size < 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	int ok = 1;
	if (w[0] == MAGIC && w[1] == 1) {
		ok = w[2] <= 6;
		for (uint64_t i = 0; ok && i < w[2]; i++) {
			const uint64_t *r = w + 8 + 4 * i;
			ok = r[0] == i + 1 && r[3] == r[0] + r[1] + r[2];
		}
	} else if (w[0] != MAGIC) {
		ok = w[1] == 0 && w[2] == 0;
	}
	free(w);
	if (!ok)
		INCONSISTENT("the pool says it was closed cleanly but a record is not whole");
	return 1;
}
