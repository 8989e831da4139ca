/*
 * check_two_files.c -- two_files.c's pool. The invariant spans both files: every record the
 * metadata file counts as committed is whole in the data file.
 *
 * A program checker gets the images as its last arguments; which is which is read from
 * their content (the metadata file starts with its magic), so the order does not matter.
 * With one image only (pmreorder's protocol: the checker runs once per registered file)
 * just that file's own invariant can be checked: a metadata file's count is in range; a
 * data file's records are numbered 1, 2, ... wherever whole. The cross-file bug is
 * invisible that way.
 *
 * check(path) is the one-file check; check_pair(a, b) the whole-pool one.
 */
#include "image.h"
#define CHECKER_OWN_MAIN
#include "checker_main.h"

#define MAGIC 0x41544144495451ULL
#define NREC 4

static int
record_whole(const uint64_t *r, uint64_t seq)
{
	return r[0] == seq && r[2] == r[0] * 31 + r[1];
}

static int
data_alone(const uint64_t *d)
{
	for (uint64_t i = 0; i < NREC; i++) {
		const uint64_t *r = d + 8 * i;
		if (r[0] != 0 && r[0] != i + 1)
			return 0;
	}
	return 1;
}

static int
meta_alone(const uint64_t *m)
{
	return m[0] == MAGIC ? m[1] <= NREC : m[1] == 0;
}

int
check(const char *path)
{
	size_t size = 0;
	uint64_t *w = (uint64_t *)image_read(path, &size);
	if (w == NULL || size < 4096)
		INCONSISTENT("%s: unreadable or short image", path);
	int ok = w[0] == MAGIC ? meta_alone(w) : data_alone(w);
	free(w);
	if (!ok)
		INCONSISTENT("%s: the file is inconsistent on its own", path);
	return 1;
}

int
check_pair(const char *a, const char *b)
{
	size_t sa = 0, sb = 0;
	uint64_t *wa = (uint64_t *)image_read(a, &sa);
	uint64_t *wb = (uint64_t *)image_read(b, &sb);
	int ok = wa != NULL && wb != NULL && sa >= 4096 && sb >= 4096;
	if (ok) {
		/* The data file never starts with the magic (its first word is a sequence number). */
		const uint64_t *m = wa[0] == MAGIC ? wa : wb;
		const uint64_t *d = m == wa ? wb : wa;
		ok = meta_alone(m) && data_alone(d);
		for (uint64_t i = 0; ok && m[0] == MAGIC && i < m[1]; i++)
			ok = record_whole(d + 8 * i, i + 1);
	}
	free(wa);
	free(wb);
	if (!ok)
		INCONSISTENT("a committed record is missing or torn in the data file");
	return 1;
}

#ifndef CHECKER_LIB
/* The whole pool when the last two arguments are images, one file's own check otherwise. */
int
main(int argc, char *argv[])
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s [--pair] [ARGS...] IMAGE [IMAGE]\n", argv[0]);
		return 2;
	}
	if (argc >= 4 && strcmp(argv[1], "--pair") == 0)
		return check_pair(argv[argc - 2], argv[argc - 1]) ? 0 : 1;
	return check(argv[argc - 1]) ? 0 : 1;
}
#endif
