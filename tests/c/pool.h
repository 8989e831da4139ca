/*
 * pool.h -- what the raw-mmap test programs share: map a file as "persistent memory", tell
 * pmemcheck about it, and flush a range line by line.
 *
 * A program mapping a plain file is not on persistent memory, so pmemcheck has to be told
 * which range to track (REGISTER_PMEM_MAPPING) and which file it is (REGISTER_PMEM_FILE, the
 * REGISTER_FILE record of the log). Outside valgrind both requests are no-ops.
 */
#ifndef POOL_H
#define POOL_H

#include <fcntl.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Built for recording, -I PREFIX/include of a pmemcheck build provides the client requests;
 * elsewhere they are no-ops and the programs still run (natively, untracked).
 */
#if __has_include(<valgrind/pmemcheck.h>)
#include <valgrind/pmemcheck.h>
#else
#define VALGRIND_PMC_REGISTER_PMEM_MAPPING(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_PMC_REGISTER_PMEM_FILE(fd, addr, len, off) ((void)(fd), (void)(addr))
#define VALGRIND_PMC_EMIT_LOG(text) ((void)(text))
#define VALGRIND_PMC_DEEP_SYNC(addr, len) ((void)(addr), (void)(len))
#endif

#define LINE 64

/* A fresh file of `size` zero bytes, mapped shared and registered with pmemcheck. */
static inline void *
pool_create(const char *path, size_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
		perror(path);
		exit(2);
	}
	void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	VALGRIND_PMC_REGISTER_PMEM_MAPPING(addr, size);
	VALGRIND_PMC_REGISTER_PMEM_FILE(fd, addr, size, 0);
	close(fd);
	return addr;
}

/* clwb every line of [addr, addr + len); the caller fences. */
static inline void
flush_clwb(const void *addr, size_t len)
{
	uintptr_t p = (uintptr_t)addr & ~(uintptr_t)(LINE - 1);
	for (; p < (uintptr_t)addr + len; p += LINE)
		_mm_clwb((void *)p);
}

/* The same with clflushopt. */
static inline void
flush_clflushopt(const void *addr, size_t len)
{
	uintptr_t p = (uintptr_t)addr & ~(uintptr_t)(LINE - 1);
	for (; p < (uintptr_t)addr + len; p += LINE)
		_mm_clflushopt((void *)p);
}

#endif
