# cython: language_level=3
"""Demote a SCHED_FIFO thread that uses more than half of its core, inside a signal handler.

A CPU-time timer of the thread (timer_create on CLOCK_THREAD_CPUTIME_ID: it runs only while the
thread does) sends SIGPROF each `interval_us` of its CPU time. The handler compares the thread's
CPU time with the wall clock since the previous signal: over half means the thread had more than
half of its core meanwhile, and it then drops the thread to SCHED_OTHER and rings the doorbell
(one byte on a non-blocking pipe the reactor watches). processes/shared/rt_budget.py says why.
The handler is C, so it acts at once, whatever the thread was doing: a Python handler runs only
between two bytecodes and would wait out a long C call (a garbage collection pass, tens of ms).
It makes async-signal-safe calls only (clock_gettime, raw syscalls; errno saved and restored).
Twin: ext/demote_py.py.
"""

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdint.h>
    #include <string.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>

    static volatile sig_atomic_t tsd_demotions = 0;
    static volatile pid_t tsd_tid = 0;
    static volatile int tsd_fd = -1;
    static clockid_t tsd_cpu_clock;
    static int64_t tsd_last_wall = 0, tsd_last_cpu = 0;
    static struct sigaction tsd_previous;
    static timer_t tsd_timer;
    static int tsd_installed = 0;

    static int64_t tsd_ns(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }

    static void tsd_on_sigprof(int sig) {
        (void)sig;
        int saved = errno;
        if (tsd_tid) {
            int64_t wall = tsd_ns(CLOCK_MONOTONIC), cpu = tsd_ns(tsd_cpu_clock);
            int64_t dw = wall - tsd_last_wall, dc = cpu - tsd_last_cpu;
            int first = tsd_last_wall == 0;
            tsd_last_wall = wall;
            tsd_last_cpu = cpu;
            if (!first && dw > 0 && 2 * dc > dw) {
                long policy = syscall(SYS_sched_getscheduler, tsd_tid);
                struct sched_param p;
                memset(&p, 0, sizeof p);
                if ((policy == SCHED_FIFO || policy == SCHED_RR)
                        && syscall(SYS_sched_setscheduler, tsd_tid, SCHED_OTHER, &p) == 0) {
                    tsd_demotions++;
                    if (tsd_fd >= 0) {
                        char one = 1;
                        ssize_t ignored = write(tsd_fd, &one, 1);  /* full: already rung */
                        (void)ignored;
                    }
                }
            }
        }
        errno = saved;
    }

    static int tsd_install(int fd, long interval_us) {
        struct sigaction sa;
        struct sigevent ev;
        struct itimerspec it;
        if (tsd_installed)
            return -1;
        if (pthread_getcpuclockid(pthread_self(), &tsd_cpu_clock) != 0)
            return -1;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = tsd_on_sigprof;
        sa.sa_flags = SA_RESTART;      /* an interrupted syscall resumes where it can */
        sigemptyset(&sa.sa_mask);
        tsd_tid = (pid_t)syscall(SYS_gettid);
        tsd_fd = fd;
        tsd_last_wall = tsd_last_cpu = 0;
        if (sigaction(SIGPROF, &sa, &tsd_previous) != 0)
            return -1;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_SIGNAL;
        ev.sigev_signo = SIGPROF;
        if (timer_create(tsd_cpu_clock, &ev, &tsd_timer) != 0) {
            sigaction(SIGPROF, &tsd_previous, NULL);
            return -1;
        }
        tsd_installed = 1;
        memset(&it, 0, sizeof it);
        it.it_interval.tv_sec = interval_us / 1000000;
        it.it_interval.tv_nsec = (interval_us % 1000000) * 1000;
        it.it_value = it.it_interval;
        return timer_settime(tsd_timer, 0, &it, NULL);
    }

    static int tsd_uninstall(void) {
        if (!tsd_installed)
            return 0;
        if (timer_delete(tsd_timer) != 0)
            return -1;
        tsd_tid = 0;
        tsd_fd = -1;
        tsd_installed = 0;
        return sigaction(SIGPROF, &tsd_previous, NULL);
    }

    static long tsd_count(void) { return (long)tsd_demotions; }
    """
    int tsd_install(int fd, long interval_us) nogil
    int tsd_uninstall() nogil
    long tsd_count() nogil


def install(fd: int, interval_us: int) -> None:
    """From now on the calling thread, while SCHED_FIFO (or RR), drops to SCHED_OTHER once it
    has used over half of its core between two checks, one each `interval_us` of its CPU time;
    each demotion writes one byte to `fd` (-1: none). Once per process until uninstall()."""
    if interval_us <= 0:
        raise ValueError("interval_us must be > 0")
    if tsd_install(fd, interval_us) != 0:
        raise OSError("timer_create/sigaction for SIGPROF failed (or already installed)")


def uninstall() -> None:
    """The timer deleted, and the SIGPROF handler that was there before install()."""
    if tsd_uninstall() != 0:
        raise OSError("timer_delete/sigaction failed")


def demotions() -> int:
    """Times the handler demoted the thread since the process started."""
    return tsd_count()
