/* What a hostile program inside a container tries: new namespaces through
 * clone and clone3 (the way to regain NET_RAW and NET_ADMIN), io_uring,
 * raw and packet sockets; and what must still work: a plain fork and a
 * thread. Prints one `name=result` line each; built static by the tests. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <linux/if_ether.h>

static const char *verdict(long r) {
    static char text[64];
    if (r >= 0) return "ok";
    snprintf(text, sizeof text, "%s", strerrorname_np(errno));
    return text;
}

/* clone(2) as the raw system call, the child exiting at once. */
static long raw_clone(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, 0, 0);
    return pid;
}

static void *nothing(void *arg) { return arg; }

int main(void) {
    printf("newuser=%s\n", verdict(raw_clone(CLONE_NEWUSER)));
    printf("newnet=%s\n", verdict(raw_clone(CLONE_NEWNET)));
    printf("newuser_newnet=%s\n", verdict(raw_clone(CLONE_NEWUSER | CLONE_NEWNET)));
    printf("newns=%s\n", verdict(raw_clone(CLONE_NEWNS)));
    printf("newpid=%s\n", verdict(raw_clone(CLONE_NEWPID)));
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, 0, 0);
    printf("clone3=%s\n", verdict(pid));
    uint8_t params[120];
    memset(params, 0, sizeof params);
    long ring = syscall(SYS_io_uring_setup, 4, params);
    printf("io_uring=%s\n", verdict(ring));
    printf("unshare=%s\n", verdict(unshare(CLONE_NEWUSER)));
    printf("packet=%s\n", verdict(socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))));
    printf("raw=%s\n", verdict(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)));
    printf("fork=%s\n", verdict(raw_clone(0)));
    pid_t child = fork();
    if (child == 0) _exit(0);
    if (child > 0) waitpid(child, 0, 0);
    printf("libc_fork=%s\n", verdict(child));
    /* glibc tries clone3 first and falls back to clone on ENOSYS. */
    pthread_t thread;
    int failed = pthread_create(&thread, 0, nothing, 0);
    if (!failed) pthread_join(thread, 0);
    printf("thread=%s\n", failed ? strerrorname_np(failed) : "ok");
    return 0;
}
