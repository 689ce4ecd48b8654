/* spoolkit's group commit written in C, without an interpreter: the reference for what this
 * disk and kernel allow. THREADS threads each append PER 150-byte records to one preallocated
 * file and wait until an fdatasync covers their record. The first caller with no flush
 * running leads: while the last flush covered more than one caller, it waits until as many
 * callers are in, or for half the last flush's duration (at most 2 ms), then flushes
 * everything written so far; the others wait for a flush that covers them. With THREADS=1
 * every record gets its own fdatasync.
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

#define MAX_PATIENCE_NS 2000000L

static int fd, per;
static long pos, gen, durable, patience_ns;
static int flushing, inside, group = 1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;   /* callers waiting for a flush */
static pthread_cond_t joined = PTHREAD_COND_INITIALIZER; /* the leader waiting for its group */

static long now_ns(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void gather(void) { /* as the leader, mutex held */
  if (group > 1 && inside < group && patience_ns > 0) {
    long until = now_ns(CLOCK_REALTIME) + patience_ns;
    struct timespec deadline = {until / 1000000000L, until % 1000000000L};
    while (inside < group)
      if (pthread_cond_timedwait(&joined, &mu, &deadline)) break;
  }
  group = inside;
  inside = 0;
}

static void *writer(void *unused) {
  char rec[150];
  (void)unused;
  memset(rec, 'x', sizeof rec);
  for (int i = 0; i < per; i++) {
    pthread_mutex_lock(&mu);
    if (pwrite(fd, rec, sizeof rec, pos) != (ssize_t)sizeof rec) abort();
    pos += sizeof rec;
    long mine = ++gen;
    inside++;
    pthread_cond_signal(&joined);
    while (durable < mine) {
      if (flushing) {
        pthread_cond_wait(&done, &mu);
        continue;
      }
      flushing = 1;
      gather();
      long target = gen, started = now_ns(CLOCK_MONOTONIC);
      pthread_mutex_unlock(&mu);
      if (fdatasync(fd)) abort();
      long took = now_ns(CLOCK_MONOTONIC) - started;
      pthread_mutex_lock(&mu);
      patience_ns = took / 2 < MAX_PATIENCE_NS ? took / 2 : MAX_PATIENCE_NS;
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
  long started = now_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, writer, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  double secs = (double)(now_ns(CLOCK_MONOTONIC) - started) / 1e9;
  printf("%.0f\n", threads * per / secs);
  close(fd);
  unlink(path);
  return 0;
}
