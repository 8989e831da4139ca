/*
 * check_undo_tx.c -- undo_tx.c's recovery on an image: roll back a valid undo log, then the
 * balances must sum to the initial total (nothing created or destroyed).
 */
#include "image.h"
#include "checker_main.h"

#define MAGIC 0x58544f444e55ULL
#define NACCT 4

int
check(const char *path)
{
	size_t size = 0;
	uint64_t *w = (uint64_t *)image_read(path, &size);
	if (w == NULL || size < 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	if (w[0] != MAGIC) {
		free(w); /* initialisation did not finish: an empty bank */
		return 1;
	}
	uint64_t bal[NACCT];
	for (int i = 0; i < NACCT; i++)
		bal[i] = w[16 + 8 * i];
	const uint64_t *log = w + 8;
	int ok = 1;
	if (log[7] == 1) {
		ok = log[0] < NACCT && log[2] < NACCT;
		if (ok) {
			bal[log[0]] = log[1];
			bal[log[2]] = log[3];
		}
	}
	free(w);
	uint64_t total = 0;
	for (int i = 0; i < NACCT; i++)
		total += bal[i];
	if (!ok || total != 100 * NACCT)
		INCONSISTENT("after rollback the balances sum to %llu, not %d",
			     (unsigned long long)total, 100 * NACCT);
	return 1;
}
