/* LD_PRELOAD for the bench's DHCP load generator (perfdhcp, pinned to one core): every datagram
 * or packet socket it opens gets a large receive buffer (SO_RCVBUFFORCE; the bench runs as root).
 * Without it perfdhcp's own socket overflowed at 6000 DISCOVERs/s and above (thousands of client
 * side overflows, none at the server), so the load generator, not the server under test, set the
 * drop rate. Every server is measured through the same perfdhcp. Size: BENCH_RCVBUF bytes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>

int socket(int domain, int type, int protocol) {
    static int (*real)(int, int, int);
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    int dgram = (type & 0xf) == SOCK_DGRAM || (type & 0xf) == SOCK_RAW;
    if (fd >= 0 && dgram && (domain == AF_INET || domain == AF_INET6 || domain == AF_PACKET)) {
        const char *env = getenv("BENCH_RCVBUF");
        int size = env ? atoi(env) : 16 << 20;
        if (size > 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    }
    return fd;
}
