/* The ceiling of group commit on this machine, without an interpreter: THREADS threads each
 * append PER 150-byte records to one preallocated file and wait until an fdatasync covers
 * their record. The first waiter with no flush running flushes everything written so far;
 * the others wait on a condition variable (the classic group commit). With THREADS=1 every
 * record gets its own fdatasync.
 *
 *     cc -O2 -pthread -o group_commit group_commit.c && ./group_commit DIR THREADS PER
 *
 * Prints the durable records per second. benchmarks/queue_bench.py builds and runs it when a
 * C compiler is at hand, beside spoolkit's own group commit.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fd, per;
static long pos, gen, durable;
static int flushing;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;

static void *writer(void *unused) {
  char rec[150];
  (void)unused;
  memset(rec, 'x', sizeof rec);
  for (int i = 0; i < per; i++) {
    pthread_mutex_lock(&mu);
    if (pwrite(fd, rec, sizeof rec, pos) != (ssize_t)sizeof rec) abort();
    pos += sizeof rec;
    long mine = ++gen;
    while (durable < mine) {
      if (flushing) {
        pthread_cond_wait(&done, &mu);
        continue;
      }
      flushing = 1;
      long target = gen;
      pthread_mutex_unlock(&mu);
      if (fdatasync(fd)) abort();
      pthread_mutex_lock(&mu);
      durable = target;
      flushing = 0;
      pthread_cond_broadcast(&done);
    }
    pthread_mutex_unlock(&mu);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s DIR THREADS PER\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[2]);
  per = atoi(argv[3]);
  if (threads < 1 || threads > 64 || per < 1) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/group-commit.%d", argv[1], (int)getpid());
  fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || posix_fallocate(fd, 0, (off_t)threads * per * 150 + 4096)) return 1;
  pthread_t t[64];
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, writer, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.0f\n", threads * per / secs);
  close(fd);
  unlink(path);
  return 0;
}
