/* The supervised program of bench/run.sh: one tiny, static C program, so that what is measured
 * is the supervisor and not the child's start-up.
 *
 *   child crash FILE     appends "S <ns> <pid>" first thing, then "E <ns> <pid>" right before
 *                        _exit(1): a crash loop whose restart gaps can be read from FILE.
 *   child hold FILE      appends "S <ns> <pid>", then waits for a signal (SIGTERM kills it).
 *   child stubborn FILE  ignores SIGTERM, then appends "S <ns> <pid>" and waits forever.
 *   child pause          only waits for a signal (SIGTERM kills it): no file, no stamp, the
 *                        cheapest child there is (bench/up_scale.sh starts thousands).
 *
 * <ns> is CLOCK_MONOTONIC in nanoseconds: the same clock as Rust's Instant and Python's
 * time.monotonic_ns(), so stamps compare with the drivers' own. Each line is one write() on an
 * O_APPEND descriptor, so concurrent instances never interleave within a line. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stamp(int fd, char tag) {
    struct timespec ts;
    char line[64];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(line, sizeof line, "%c %lld %d\n", tag,
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (int)getpid());
    if (write(fd, line, (size_t)n) != n) _exit(3);
}

int main(int argc, char **argv) {
    struct timespec first;
    /* The very first instruction that matters: read the clock. */
    clock_gettime(CLOCK_MONOTONIC, &first);
    if (argc == 2 && strcmp(argv[1], "pause") == 0)
        for (;;) pause();
    if (argc != 3) return 2;
    int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    if (strcmp(argv[1], "crash") == 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "S %lld %d\n",
                         (long long)first.tv_sec * 1000000000LL + first.tv_nsec, (int)getpid());
        if (write(fd, line, (size_t)n) != n) _exit(3);
        stamp(fd, 'E');
        _exit(1);
    }
    if (strcmp(argv[1], "stubborn") == 0) signal(SIGTERM, SIG_IGN);
    else if (strcmp(argv[1], "hold") != 0) return 2;
    stamp(fd, 'S');
    close(fd);
    for (;;) pause();
}
