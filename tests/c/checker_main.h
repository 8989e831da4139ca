/*
 * checker_main.h -- one check, two kinds of checker. Each checker source defines
 * `int check(const char *path)` (1 consistent, 0 inconsistent, the convention of pmreorder's
 * library checker) and includes this file. Built as a program it judges the image whose path
 * is its last argument and exits 0 when consistent, 1 when not (pmreorder's program-checker
 * convention); built with -DCHECKER_LIB into a shared library, `check` is all there is.
 */
#ifndef CHECKER_MAIN_H
#define CHECKER_MAIN_H

#include <stdio.h>

int check(const char *path);

/* Inconsistent: say why (programs only: a library checker stays quiet and fast). */
#ifdef CHECKER_LIB
/* sizeof: the arguments count as used but are never evaluated */
#define INCONSISTENT(...)                                                                  \
	do {                                                                               \
		(void)sizeof(fprintf(stderr, __VA_ARGS__));                                \
		return 0;                                                                  \
	} while (0)
#else
#define INCONSISTENT(...)                                                                  \
	do {                                                                               \
		fprintf(stderr, __VA_ARGS__);                                              \
		fputc('\n', stderr);                                                       \
		return 0;                                                                  \
	} while (0)
#endif

#if !defined(CHECKER_LIB) && !defined(CHECKER_OWN_MAIN)
int
main(int argc, char *argv[])
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s [ARGS...] IMAGE\n", argv[0]);
		return 2;
	}
	return check(argv[argc - 1]) ? 0 : 1;
}
#endif

#endif
