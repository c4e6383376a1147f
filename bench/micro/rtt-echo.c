/*
 * The least a request/response round trip between two processes costs on this machine: a TCP
 * echo over loopback in C (bench/micro/rtt-floor.ts runs it beside the same echo in Node).
 * The child echoes; the parent sends 150 bytes (a lookup frame's size), waits for them back,
 * sleeps 1 ms (so both sides are idle and must be woken, as an agent is between opens), and
 * prints one round trip in microseconds per line.
 *
 *   rtt-echo N
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  int one = 1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int srv = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t len = sizeof a;
  if (srv < 0 || bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 1) || getsockname(srv, (struct sockaddr *)&a, &len)) {
    perror("rtt-echo: listen");
    return 1;
  }
  pid_t child = fork();
  if (child == 0) {
    int c = accept(srv, 0, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[256];
    for (;;) {
      ssize_t r = read(c, b, sizeof b);
      if (r <= 0) _exit(0);
      if (write(c, b, r) != r) _exit(1);
    }
  }
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (struct sockaddr *)&a, sizeof a)) {
    perror("rtt-echo: connect");
    return 1;
  }
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char b[150] = {0};
  for (int i = 0; i < n; i++) {
    usleep(1000);
    double t = now_us();
    if (write(c, b, sizeof b) != sizeof b) return 1;
    size_t got = 0;
    while (got < sizeof b) {
      ssize_t r = read(c, b + got, sizeof b - got);
      if (r <= 0) return 1;
      got += r;
    }
    printf("%.1f\n", now_us() - t);
  }
  close(c);
  return 0;
}
