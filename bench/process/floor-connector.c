/*
 * The floor of a process events connector subscriber: subscribe to CN_IDX_PROC exactly as
 * src/platform/linux/proc-connector.ts does, then recv() every datagram and discard it. No
 * parsing, no /proc reads, no hop to another thread. What a fork storm pays for this is what the
 * kernel's multicast and one wakeup per event cost, whoever listens (bench/process/process-bench.ts).
 *
 *   floor-connector [--drain-every-us N]
 * Default: block in recv(), woken once per event (as the agent's worker is). With --drain-every-us
 * it sleeps N us between non-blocking drains instead (fewer wakeups, later reads).
 * Prints "ready" on stderr once subscribed; runs until killed. Root (CAP_NET_ADMIN).
 */
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long drain_us = 0;
  if (argc == 3 && strcmp(argv[1], "--drain-every-us") == 0) drain_us = atol(argv[2]);
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) { perror("socket(NETLINK_CONNECTOR)"); return 1; }
  int rcv = 4 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv); /* as the agent: best effort */
  struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC };
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind(CN_IDX_PROC)"); return 1; }
  struct __attribute__((packed)) {
    struct nlmsghdr h;
    struct cn_msg c;
    enum proc_cn_mcast_op op;
  } m;
  memset(&m, 0, sizeof m);
  m.h.nlmsg_len = sizeof m;
  m.h.nlmsg_type = NLMSG_DONE;
  m.c.id.idx = CN_IDX_PROC;
  m.c.id.val = CN_VAL_PROC;
  m.c.len = sizeof m.op;
  m.op = PROC_CN_MCAST_LISTEN;
  if (send(fd, &m, sizeof m, 0) < 0) { perror("send(PROC_CN_MCAST_LISTEN)"); return 1; }
  fprintf(stderr, "ready\n");
  static char buf[65536];
  for (;;) {
    if (drain_us > 0) {
      while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {}
      usleep(drain_us);
    } else {
      recv(fd, buf, sizeof buf, 0);
    }
  }
}
