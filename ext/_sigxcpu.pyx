# cython: language_level=3
"""SIGXCPU drops the installing thread to SCHED_OTHER inside the signal handler itself.

The kernel sends SIGXCPU when a real-time thread has used its RLIMIT_RTTIME without blocking
(processes/shared/rt_budget.py). A Python-level handler runs only between two bytecodes, so a
long C call (a garbage collection pass over a large heap, tens of ms) would keep the thread at its
real-time rank, starving every lower rank, until the call returns. This handler is C: it runs
the moment the signal is delivered, whatever the thread was doing, and makes two raw syscalls
(the demotion, and one byte to the loop's doorbell; no libc lock, errno saved and restored). Twin: ext/sigxcpu_py.py (the same, in Python).
"""

cdef extern from *:
    """
    #include <errno.h>
    #include <sched.h>
    #include <signal.h>
    #include <string.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    static volatile sig_atomic_t tsx_demotions = 0;
    static volatile pid_t tsx_tid = 0;
    static volatile int tsx_fd = -1;
    static struct sigaction tsx_previous;
    static int tsx_installed = 0;

    static void tsx_on_sigxcpu(int sig) {
        (void)sig;
        int saved = errno;
        struct sched_param p;
        memset(&p, 0, sizeof p);
        if (tsx_tid && syscall(SYS_sched_setscheduler, tsx_tid, SCHED_OTHER, &p) == 0) {
            tsx_demotions++;
            if (tsx_fd >= 0) {
                char one = 1;
                ssize_t ignored = write(tsx_fd, &one, 1);   /* full pipe: already signalled */
                (void)ignored;
            }
        }
        errno = saved;
    }

    static int tsx_install(int fd) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = tsx_on_sigxcpu;
        sa.sa_flags = SA_RESTART;      /* an interrupted syscall resumes: no EINTR anywhere */
        sigemptyset(&sa.sa_mask);
        tsx_tid = (pid_t)syscall(SYS_gettid);
        tsx_fd = fd;
        if (sigaction(SIGXCPU, &sa, tsx_installed ? NULL : &tsx_previous) != 0)
            return -1;
        tsx_installed = 1;
        return 0;
    }

    static int tsx_uninstall(void) {
        if (!tsx_installed)
            return 0;
        if (sigaction(SIGXCPU, &tsx_previous, NULL) != 0)
            return -1;
        tsx_installed = 0;
        tsx_tid = 0;
        tsx_fd = -1;
        return 0;
    }

    static long tsx_count(void) { return (long)tsx_demotions; }
    """
    int tsx_install(int fd) nogil
    int tsx_uninstall() nogil
    long tsx_count() nogil


def install(fd: int = -1) -> None:
    """From now on SIGXCPU demotes the calling thread to SCHED_OTHER (in the handler), then
    writes one byte to `fd` (a non-blocking pipe: the loop's doorbell), if given."""
    if tsx_install(fd) != 0:
        raise OSError("sigaction(SIGXCPU) failed")


def uninstall() -> None:
    """The handler that was there before install()."""
    if tsx_uninstall() != 0:
        raise OSError("sigaction(SIGXCPU) failed")


def demotions() -> int:
    """SIGXCPUs that demoted the thread since the process started."""
    return tsx_count()
