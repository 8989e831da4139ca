/* Checkers of append.c's image (tests/test_pmlog_checkers.py builds them, as a program and
 * as a shared library): a count of 1 at offset 8 means the record (42) is at offset 0x40. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int read_words(const char *path, uint64_t *v)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, v, 9 * sizeof(*v), 0);
	close(fd);
	return n == 9 * sizeof(*v) ? 0 : -1;
}

/* 1: consistent, 0: not (pmreorder's library protocol). */
int check(const char *path)
{
	uint64_t v[9];
	if (read_words(path, v))
		return -1;
	return v[1] == 0 || v[8] == 42;
}

/* Crashes on the images check() finds inconsistent. */
int crashy(const char *path)
{
	if (check(path) != 1)
		*(volatile int *)0 = 1;
	return 1;
}

/* Never returns on the images check() finds inconsistent. */
int hangs(const char *path)
{
	if (check(path) != 1)
		for (;;)
			pause();
	return 1;
}

/* Notes a hash of the image in $PMEMSIM_TEST_SEEN, then scribbles over it (as a checker
 * that opens a pool read-write may). */
int scribbles(const char *path)
{
	unsigned char buf[4096];
	uint64_t h = 14695981039346656037ULL;
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ buf[i]) * 1099511628211ULL;
	FILE *seen = fopen(getenv("PMEMSIM_TEST_SEEN"), "a");
	fprintf(seen, "%016llx\n", (unsigned long long)h);
	fclose(seen);
	int ok = check(path);
	for (ssize_t i = 0; i < n; i++)
		buf[i] = 0xff;
	pwrite(fd, buf, n, 0);
	close(fd);
	return ok;
}

/* Judges as check() does, then zeroes the record count (as a checker that "repairs" the pool
 * it opened read-write may): later images, if built on this file, would look consistent. */
int repairs(const char *path)
{
	int ok = check(path);
	uint64_t zero = 0;
	int fd = open(path, O_RDWR);
	if (fd >= 0) {
		pwrite(fd, &zero, sizeof(zero), 8);
		close(fd);
	}
	return ok;
}

/* The markers pmreorder would set, appended to $PMEMSIM_TEST_SEEN. */
int markers(const char *path)
{
	FILE *seen = fopen(getenv("PMEMSIM_TEST_SEEN"), "a");
	const char *m = getenv("PMREORDER_MARKERS");
	fprintf(seen, "%s\n", m ? m : "(unset)");
	fclose(seen);
	return 1;
}

/* Judges as check() does, and appends a line per call to $PMEMSIM_TEST_SEEN. */
int counted(const char *path)
{
	FILE *seen = fopen(getenv("PMEMSIM_TEST_SEEN"), "a");
	fputs("1\n", seen);
	fclose(seen);
	return check(path);
}

/* As a program: check() (or scribbles() when $PMEMSIM_TEST_SEEN is set); exit 0 when
 * consistent. */
int main(int argc, char **argv)
{
	const char *path = argv[argc - 1];
	return (getenv("PMEMSIM_TEST_SEEN") ? scribbles(path) : check(path)) == 1 ? 0 : 1;
}
