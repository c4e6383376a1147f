/*
 * The floor: the least a fanotify permission-event scanner can cost on this machine, to set
 * lightagent's numbers against (bench/onaccess/variants.ts, variant `floor`).
 *
 * It does what lightagent's gate does in the kernel, and almost nothing in user space:
 *   - one group, FAN_CLASS_CONTENT, a mount mark: FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_CLOSE_WRITE;
 *   - per event: fstat, pread of the first 4 KiB through the event fd, one fixed-string match
 *     (the EICAR test string, so the bench's EICAR check passes), the response;
 *   - a clean non-empty regular file gets an ignore mark on its inode (FAN_OPEN_PERM |
 *     FAN_OPEN_EXEC_PERM), as lightagent's clean verdicts do, so warm opens raise no event.
 * No cache, no hashing, no SVM, no quarantine: a real scanner cannot cost less per event.
 *
 *   cc -O2 -o floor-listener floor-listener.c && ./floor-listener [--no-marks] MOUNT    (root)
 *
 * --no-marks: never add an ignore mark, so every open is an event answered here (the floor of
 * lightagent's local cache hit, where the agent answers each open).
 *
 * Prints "ready" once marked. Dies with its parent (PR_SET_PDEATHSIG): a bench that is killed
 * never leaves a listener holding opens on the mount.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define PERM (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM)

static int fan;
static int marks = 1;

static int infected(int fd) {
  static char head[4096];
  ssize_t n = pread(fd, head, sizeof head, 0);
  /* Split so that this source file holds no EICAR test string. */
  static const char sig[] = "EICAR-STANDARD-" "ANTIVIRUS-TEST-FILE";
  return n > 0 && memmem(head, (size_t)n, sig, sizeof sig - 1) != NULL;
}

static void event(const struct fanotify_event_metadata *m) {
  struct stat st;
  int regular = fstat(m->fd, &st) == 0 && S_ISREG(st.st_mode);
  int bad = regular && st.st_size > 0 && infected(m->fd);
  if (m->mask & PERM) {
    struct fanotify_response r = { .fd = m->fd, .response = bad ? FAN_DENY : FAN_ALLOW };
    if (write(fan, &r, sizeof r) != sizeof r) perror("floor-listener: response");
  }
  if (marks && regular && st.st_size > 0 && !bad) fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, PERM, m->fd, NULL);
  close(m->fd);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--no-marks") == 0) {
    marks = 0;
    argv++;
    argc--;
  }
  if (argc != 2) {
    fprintf(stderr, "usage: floor-listener [--no-marks] MOUNT\n");
    return 2;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1; /* the parent is already gone */
  fan = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
  if (fan < 0) {
    perror("floor-listener: fanotify_init");
    return 1;
  }
  if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_MOUNT, PERM | FAN_CLOSE_WRITE, AT_FDCWD, argv[1]) < 0) {
    perror("floor-listener: fanotify_mark");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  static char buf[256 * 1024] __attribute__((aligned(8)));
  struct pollfd p = { .fd = fan, .events = POLLIN };
  for (;;) {
    if (poll(&p, 1, 1000) <= 0) continue;
    ssize_t n = read(fan, buf, sizeof buf);
    if (n <= 0) continue;
    const struct fanotify_event_metadata *m = (const void *)buf;
    for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n))
      if (m->fd >= 0) event(m);
  }
}
