"""A checker worker's side (:mod:`pmemsim.pmlog.workers` is pmemsim's): image files kept in
step with what pmemsim sends, and the checker called on each image.

A library checker's first worker is a new interpreter (:func:`spawned`), started by
posix_spawn while pmemsim itself starts: a fork of pmemsim would make every page pmemsim
writes afterwards a copy (about 2,000 page faults in a short check, 4 ms), and pmemsim would
wait for the library to load. So this module, and what it imports, import nothing of
pmemsim's but :mod:`pmemsim.explore.frames` and :mod:`pmemsim.pmlog.imagefile`, and no
more of Python's than they use: the new interpreter imports them without pmemsim's
packages (see :data:`BOOT`).

Workers forked later (a restart after a crash, more than one job, a Python checker) run
the same loop (:func:`serve`).
"""

from __future__ import annotations

# The signal module's C half: the module itself makes its enums (importing enum, functools
# and collections), 8 ms of the new interpreter's start on a busy machine.
import _signal as signal  # type: ignore[import-not-found]
import marshal
import mmap
import posix  # (os's C half: os itself imports 6.4 million instructions' worth, 15% of a start)
import sys
from time import monotonic as _clock

from ..explore import frames
from .clib import Library
from .imagefile import IN_Q_OVERFLOW, Inotify, Refill, copy_base, fsencode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .images import Pool

    #: A loaded checker: its verdict on one run (the indexes of the files it is given).
    Judge = Callable[[Any, list[int]], str | None]

__all__ = [
    "BOOT",
    "INDEX",
    "TAIL",
    "WORD",
    "Files",
    "Limited",
    "LoadError",
    "c_judge",
    "library_spec",
    "limited",
    "serve",
]

#: What a worker is judging, in a word of memory shared with pmemsim (8 bytes, little
#: endian): its message number << INDEX | the image's index in it.
WORD = 8
#: Last in an answer when the checker may have left a process running (:func:`_left`).
LEFT: Any = (-1, None)
INDEX = 20
#: How much of a failing checker's output a report keeps.
TAIL = 2000

#: The new interpreter's program (``python -E -S -c BOOT PACKAGE_DIR ARGS...``): this module
#: imported from pmemsim's folder with its packages' ``__init__`` left out (they import
#: typing, which alone would double the start of the worker), then :func:`spawned`.
BOOT = """import sys
for name in ("pmemsim", "pmemsim.explore", "pmemsim.pmlog"):
    package = type(sys)(name)
    package.__path__ = [sys.argv[1] + name[7:].replace(".", "/")]
    sys.modules[name] = package
from pmemsim.pmlog.serve import spawned
spawned(sys.argv[2:])
"""


class LoadError(Exception):
    """The checker cannot be loaded (no such library or function): said to pmemsim, which
    refuses the checker with this text."""


def library_spec(spec: str) -> tuple[str, str] | None:
    """``LIB.so:FUNCTION`` as (the library as dlopen is to be given it, the function); None
    when it is not of that form. A bare file name in the current folder is made a path
    (dlopen looks for a bare name only in the library path)."""
    import os  # (pmemsim's process: not a worker's)

    lib, sep, fn = spec.rpartition(":")
    if not sep or not lib or not fn or not fn.isidentifier():
        return None
    if os.sep not in lib and os.path.exists(lib):
        lib = os.path.join(".", lib)
    return lib, fn


class Files:
    """The worker's image files: one per pool, shared-mapped, kept at the state it was sent
    (the initial content plus every line moved)."""

    def __init__(
        self,
        folder: str,
        names: Sequence[str],
        pools: Sequence[Pool],
        notify: Inotify | None = None,
    ) -> None:
        self.pools = list(pools)
        self.paths = [f"{folder}/{n}" for n in names]
        self.bpaths = [fsencode(p) for p in self.paths]
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []
        #: (pool, line) -> the content it was sent (what the file holds there).
        self.moved: dict[tuple[int, int], bytes] = {}
        #: (pool, line) -> the initial content read back from the source file.
        self.initial: dict[tuple[int, int], bytes] = {}
        self.notify: Inotify | None = None
        #: ``news(0)``: true when a file may have changed since :meth:`check` (asked once
        #: per image: without inotify, always).
        self.news: Callable[[int], object] = _always
        self.watches: dict[int, int] = {}
        #: The judge whose output the watch covers (:meth:`follow`), and the watch's number.
        self.output: _CJudge | None = None
        self._said = -1
        self.rebuilds = 0
        self.refills = [Refill(p) for p in self.pools]
        _folder(folder)
        try:
            self.notify = notify if notify is not None else Inotify()
            self.news = self.notify.poll
        except (OSError, AttributeError):
            self.notify = None  # every image rebuilt: correct, slower
        for i in range(len(self.pools)):
            self._create(i)

    def close(self) -> Inotify | None:
        """Unmap and remove the image files (a worker kept between checks keeps no pages);
        the inotify instance is given back, for the next check's files: closing one that
        watches a file takes the kernel 15 ms or more (it waits for a grace period), which
        the next check waited for, where removing a watched file takes microseconds (its
        watch goes with it; the events that say so are read here)."""
        if self.output is not None:
            self.output.watched = False
            self.output = None
        for m, fd, path in zip(self.maps, self.fds, self.paths, strict=True):
            try:
                m.close()
            except BufferError:  # (a Python checker's view still held: the collector's)
                pass
            posix.close(fd)
            try:
                posix.unlink(path)
            except FileNotFoundError:  # (a checker removed it)
                pass
        self.maps, self.fds = [], []
        notify, self.notify = self.notify, None
        if notify is not None:
            notify.events()
        return notify

    def _create(self, i: int) -> None:
        size, source, source_size = self.pools[i]
        path = self.paths[i]
        # Events of the file being replaced are not news.
        self.watches = {wd: j for wd, j in self.watches.items() if j != i}
        try:
            posix.unlink(path)
        except FileNotFoundError:
            pass
        fd = posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600)
        posix.ftruncate(fd, size)
        if source is not None and source_size:
            copy_base(source, fd, min(size, source_size))
        m = mmap.mmap(fd, size, mmap.MAP_SHARED)
        if i < len(self.fds):
            try:
                self.maps[i].close()
                posix.close(self.fds[i])
            except (OSError, BufferError):
                pass
            self.fds[i], self.maps[i] = fd, m
        else:
            self.fds.append(fd)
            self.maps.append(m)
        if self.notify is not None:
            try:
                self.watches[self.notify.watch(path)] = i
            except OSError:  # out of watches: no telling what a checker does
                self.notify.close()
                self.notify = None
                self.news = _always
                if self.output is not None:
                    self.output.watched = False
                    self.output = None
        self._moved_into(i)

    def _renew(self, i: int) -> None:
        """Make file ``i`` right again after someone opened it for writing: in place when
        it is still the file made, else a new one."""
        if self.refills[i](self.paths[i], self.fds[i], self.maps[i]):
            self._moved_into(i)
        else:
            self._create(i)

    def _moved_into(self, i: int) -> None:
        m = self.maps[i]
        for (pool, line), content in self.moved.items():
            if pool == i:
                m[line : line + len(content)] = content

    def move(self, changes: list[tuple[int, int, bytes]]) -> None:
        maps, moved = self.maps, self.moved
        for pool, line, content in changes:
            maps[pool][line : line + len(content)] = content
            moved[(pool, line)] = content

    def held(self, pool: int, line: int, n: int) -> bytes:
        """What the file holds at a line outside an image."""
        got = self.moved.get((pool, line))
        if got is not None:
            return got
        got = self.initial.get((pool, line))
        if got is not None and len(got) == n:
            return got
        _, source, source_size = self.pools[pool]
        if source is None or line >= source_size:
            return bytes(n)
        fd = posix.open(source, posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            data = posix.pread(fd, min(n, source_size - line), line)
        finally:
            posix.close(fd)
        got = data + bytes(n - len(data))
        # Kept: the same lines deviate image after image. Bounded: a pool of millions of
        # lines would otherwise be held twice.
        if len(self.initial) >= 1 << 16:
            self.initial.clear()
        self.initial[(pool, line)] = got
        return got

    def follow(self, judge: _CJudge) -> None:
        """Watch ``judge``'s output file too: the poll that asks after each image whether a
        checker changed a file (:attr:`news`) then also says whether it wrote anything,
        and :meth:`check` has the judge drop what a consistent image's run said. (Without,
        the judge asks its file's offset after every run, one more system call per image.)"""
        if self.notify is None or judge.path is None:
            return
        try:
            self._said = self.notify.watch(judge.path)
        except OSError:
            return
        self.output = judge
        judge.watched = True

    def check(self) -> None:
        """Rebuild every file that someone opened for writing (or changed) since (a caller
        that asks per image asks :attr:`news` first)."""
        notify = self.notify
        if notify is not None and not notify.pending():  # (most images: one poll)
            return
        if notify is None:
            for i in range(len(self.pools)):
                self._renew(i)
            self.rebuilds += 1
            return
        events = notify.events()
        if not events:
            return
        hit = {self.watches[wd] for wd, _ in events if wd in self.watches}
        said = any(wd == self._said for wd, _ in events)
        if any(mask & IN_Q_OVERFLOW for _, mask in events):
            hit = set(range(len(self.pools)))
            said = True
        for i in sorted(hit):
            self._renew(i)
        if hit:
            self.rebuilds += 1
        if said and self.output is not None:
            self.output.drop()
        if self.notify is not None:  # what renewing itself queued: not a checker's doing
            self.notify.events()


#: lseek's whence (POSIX's values; os names them, posix does not).
_SEEK_SET, _SEEK_CUR = 0, 1


def _folder(path: str) -> None:
    """``os.makedirs(path, 0o700, exist_ok=True)`` without os, where the parent exists."""
    try:
        posix.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        import os

        os.makedirs(path, 0o700, exist_ok=True)


def _setenv(name: str, value: str) -> None:
    """Set an environment variable for the checker: through ``os.environ`` where os is
    imported (a Python checker's forked worker: its view is kept right), else for C's
    ``getenv`` alone."""
    os = sys.modules.get("os")
    if os is not None:
        os.environ[name] = value
    else:
        posix.putenv(name, value)


def _always(timeout: int) -> bool:
    """What may have changed is not known: say it may have."""
    return True


def serve(load: Callable[[], Judge], rfd: int, wfd: int, judging: mmap.mmap) -> None:
    """A worker's loop: messages in, verdicts out, until EOF. ``judging`` is told, before
    each image, the number of the message and the image's in it
    (:meth:`~pmemsim.pmlog.workers.LibWorker.judging`).

    The first message is ``("setup", folder, names, pools, consistent, seconds)``: the
    image files to make, the value of a library function that means consistent, and the
    time limit of each run. Past it, SIGALRM (its default action) ends the worker,
    wherever the checker is (a C loop never returns to Python), and pmemsim reads that exit
    as "timed out": a hang costs its image's limit, not a batch's. A check's last message
    may be ``("release",)``: the worker is kept for a later check, which starts with a setup
    of its own; meanwhile the image files are removed."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (a fork keeps pmemsim's handler)
    try:
        judge = load()
        if isinstance(judge, _CJudge):
            judge.alone()  # (this process's one thread)
    except LoadError as exc:
        frames.send(wfd, ("error", str(exc)), marshal.dumps)
        return
    except Exception as exc:
        frames.send(wfd, ("error", f"{type(exc).__name__}: {exc}"), marshal.dumps)
        return
    frames.send(wfd, ("ready", ""), marshal.dumps)
    reader = frames.Reader(rfd, marshal.loads)
    word = _word(judging)
    files: Files | None = None
    # The files' inotify instance, kept from one check to the next: made now, while this
    # process would wait for its first check anyway (its C functions' making is most of
    # its cost, some 0.1 ms).
    notify: Inotify | None = None
    try:
        notify = Inotify()
    except (OSError, AttributeError):  # (none: the files do without, Files.__init__)
        pass
    limit = run_one = judge
    token: object = None
    received = 0
    try:
        while True:
            try:
                batch: Any = reader.get()
            except EOFError:
                return
            if batch[0] == "release":  # its check is done: it may be kept for another
                if files is not None:
                    notify = files.close()
                    files = None
                continue
            if batch[0] == "setup":
                if files is not None:
                    notify = files.close()
                _, folder, names, pools, consistent, seconds = batch
                files = Files(folder, names, pools, notify)
                if isinstance(judge, _CJudge):
                    judge.consistent = consistent
                    files.follow(judge)
                limit = limited(judge, seconds)
                run_one = _direct(limit)
                continue
            assert files is not None
            received += 1
            message = received << INDEX
            # Only the images some run found inconsistent are answered, by their number
            # in the batch: most images pass, and their verdicts cost nothing to send.
            out = []
            maps, held, moved = files.maps, files.held, files.moved
            n = 0
            for item in batch:
                if item[0] == "M":
                    files.move(item[1])
                    continue
                _, patches, runs, markers, info = item
                if markers is not None:
                    _setenv("PMREORDER_MARKERS", markers)
                if info is not None:  # (a Python checker's, in a forked worker)
                    from ..markers import CrashInfo, reset_crash, set_crash

                    if token is not None:
                        reset_crash(token)
                    token = set_crash(CrashInfo(*info))
                for p in patches:
                    maps[p[3]][p[4] : p[5]] = p[0]
                word[0] = message | n
                got: list[str | None] | None
                try:
                    if len(runs) == 1:  # (most images: no list made per image)
                        one = run_one(files, runs[0])
                        got = None if one is None else [one]
                    else:
                        got = []
                        for run in runs:
                            if got and files.output is not None:
                                files.output.drop()  # (the watch is asked once per image)
                            got.append(run_one(files, run))
                        if got.count(None) == len(got):
                            got = None
                finally:
                    # First: a checker that cut its file short makes writing the lines back
                    # through the mapping a SIGBUS.
                    if files.news(0):
                        files.check()
                    for p in patches:
                        back = moved.get((p[3], p[4]))  # (most lines: held() without a call)
                        if back is None:
                            back = held(p[3], p[4], p[5] - p[4])
                        maps[p[3]][p[4] : p[5]] = back
                if got is not None:
                    out.append((n, [_sent(v) for v in got]))
                n += 1
            if isinstance(limit, Limited):
                limit.idle()  # (no run until the next batch, however long that takes)
            if isinstance(judge, _CJudge) and _left(judge):  # (a Python checker's: never kept)
                out.append(LEFT)
            frames.send(wfd, out, marshal.dumps)
    finally:
        if isinstance(word, memoryview):
            word.release()
        if token is not None:
            from ..markers import reset_crash

            reset_crash(token)


def _word(judging: mmap.mmap) -> Any:
    """The judging word, set as ``word[0] = value``: a C ``uint64_t`` where this machine's
    byte order is the word's (little endian), which costs a fifth of ``int.to_bytes`` and a
    slice's copy per image."""
    if sys.byteorder == "little":
        return memoryview(judging).cast("Q")
    return _BytesWord(judging)


class _BytesWord:
    """The judging word where a ``uint64_t`` is big endian."""

    def __init__(self, judging: mmap.mmap) -> None:
        self.judging = judging

    def __setitem__(self, index: int, value: int) -> None:
        self.judging[:WORD] = value.to_bytes(WORD, "little")


def _direct(judge: Judge) -> Judge:
    """``judge``, or its ``__call__`` method if it is an object of a Python class: calling
    that takes the interpreter's quick way for Python functions, not the type's call slot
    (which costs some 450 instructions more per call)."""
    call = vars(type(judge)).get("__call__")  # (a class's own: Limited's, _CJudge's)
    if type(call) is not type(_direct):
        return judge
    method: Judge = call.__get__(judge)
    return method


def limited(judge: Judge, seconds: float | None) -> Judge:
    """``judge`` under a time limit per run (:class:`Limited`), or ``judge`` itself when
    ``seconds`` is None."""
    return judge if seconds is None else Limited(judge, seconds)


class Limited:
    """A judge under a time limit per run: past it, SIGALRM's default action ends this
    process, wherever the checker is.

    Arming and disarming a timer around each run cost two system calls, a third of a
    worker's time per image with a quick checker. So the timer is armed for the limit plus
    a slack (a hundredth of the limit, at most 50 ms), and armed again only by a run that
    starts more than the slack after it was: every run still has at least its limit before
    the timer fires, and at most the slack more. A run that ends more than the slack after
    the timer was armed disarms it, so that what follows a run (this process's own work)
    always has the whole limit too; and so does :meth:`idle`, before this process waits
    for more work."""

    def __init__(self, judge: Judge, seconds: float) -> None:
        self.judge = _direct(judge)
        self.seconds = seconds
        self.slack = min(seconds / 100, 0.05)
        #: When the timer was last armed (None: it is not).
        self.armed: float | None = None

    def __call__(self, files: Any, run: list[int]) -> str | None:
        now = _clock()
        armed = self.armed
        if armed is None or now - armed > self.slack:
            signal.setitimer(signal.ITIMER_REAL, self.seconds + self.slack)
            self.armed = armed = now
        try:
            return self.judge(files, run)
        finally:
            if _clock() - armed > self.slack:
                self.idle()

    def idle(self) -> None:
        """Disarm the timer (no run is due)."""
        if self.armed is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.armed = None


def _sent(verdict: str | None) -> str | tuple[str, str] | None:
    """A verdict as marshal sends it: a Python checker's timeout or crash (a str subclass
    that says which, :class:`~pmemsim.pmlog.checkers.Fault`) as ``(kind, text)``."""
    kind = getattr(verdict, "kind", None)
    return (kind, str(verdict)) if kind else verdict


class _CJudge:
    """``int FUNCTION(const char *path)`` of a library, called on a run's first file. What
    the checker writes to ``streams`` (its stdout; a worker's stderr too, where nothing
    else writes) goes with its verdict, as a checker program's output does, instead of
    onto the terminal once per image."""

    def __init__(self, library: str, function: str, streams: tuple[int, ...]) -> None:
        libc = Library(None)
        _keep_heap(libc)
        self.library, self.function = library, function
        try:
            lib = Library(library)
        except OSError as exc:
            raise LoadError(str(exc)) from None
        try:
            # (Called with the path as bytes: a ``const char *``, its result a C int.)
            self.fn = lib.function(function)
        except AttributeError:
            raise LoadError(f"{library} has no function {function!r}") from None
        #: What the function returns for a consistent image (told by pmemsim's setup).
        self.consistent = 1
        self.out, self.path, self.flush = _own_output(libc, streams)
        #: Whether what the checker starts stays this process's descendant (:func:`_left`).
        self.reaper = _subreaper(libc)
        #: Whether someone else has this judge :meth:`drop` what a consistent image's run
        #: said, when it said anything (:meth:`Files.follow`); else it asks after every run.
        self.watched = False

    def alone(self) -> None:
        """Call the checker and fflush keeping the interpreter's lock (``hold_gil``, see
        :mod:`~pmemsim.pmlog.clib`), as a worker does: no other thread of its waits for it
        (a speculative child's may), and each call costs some 400 instructions less."""
        self.fn = Library(self.library, hold_gil=True).function(self.function)
        self.flush = Library(None, hold_gil=True).function("fflush")

    def __call__(self, files: Files, run: list[int]) -> str | None:
        got = self.fn(files.bpaths[run[0]])
        self.flush(None)
        if got == self.consistent:
            if not self.watched:
                self.drop()
            return None
        out = self.out
        said = posix.lseek(out, 0, _SEEK_CUR)
        text = ""
        if said:
            text = posix.pread(out, TAIL, max(0, said - TAIL)).decode(errors="replace")
            text = ("..." if said > TAIL else "") + text.strip()
            self._empty()
        return f"returned {got}{': ' + text if text else ''}"

    def drop(self) -> None:
        """Forget what the checker said (a consistent image's run)."""
        if posix.lseek(self.out, 0, _SEEK_CUR):
            self._empty()

    def _empty(self) -> None:
        posix.ftruncate(self.out, 0)
        posix.lseek(self.out, 0, _SEEK_SET)


def c_judge(
    library: str, function: str, consistent: int = 1, streams: tuple[int, ...] = (1,)
) -> Judge:
    """The library's function, loaded here (LoadError if it cannot be); an image is
    consistent when it returns ``consistent`` (a worker's setup may say otherwise)."""
    judge = _CJudge(library, function, streams)
    judge.consistent = consistent
    return judge


def _subreaper(libc: Library) -> bool:
    """Make this process the one that inherits its descendants' orphans (not init): every
    process the checker starts stays a child of the worker, or a child's descendant, so that
    :func:`_left` sees it. False where it cannot be."""
    try:
        return libc.function("prctl")(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except AttributeError:  # (not Linux)
        return False


_PR_SET_CHILD_SUBREAPER = 36


def _left(judge: _CJudge) -> bool:
    """Whether the checker may have left a process behind: this worker has a child (running,
    or exited and not reaped: its checker's to wait for), or cannot tell. A worker that may
    have is not kept for another check: what a checker starts ends with its check (its
    worker's process group is killed)."""
    if not judge.reaper:
        return True
    try:
        posix.waitid(posix.P_ALL, 0, posix.WEXITED | posix.WNOHANG | posix.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _keep_heap(libc: Library) -> None:
    """Have malloc keep what a checker frees for its next call. libpmemobj's open and close
    allocate and free megabytes per image; in a worker, glibc gave them back to the system
    at every close and took them again, page by page, at the next open: PMDK's map checker
    on hashmap_tx's images spent 7.6 ms of CPU per call in a worker, 2.4 ms with up to
    64 MiB kept at the heap's top (resident once a checker used them)."""
    try:
        libc.function("mallopt")(_M_TOP_PAD, 64 << 20)
    except AttributeError:  # glibc's; elsewhere a default
        pass


_M_TOP_PAD = -2


def _own_output(
    libc: Library, streams: tuple[int, ...]
) -> tuple[int, str | None, Callable[[None], int]]:
    """``streams`` sent to a file of this process's own: its descriptor, the path inotify
    can watch it by (None: none), and libc's fflush.

    The file is a memfd opened again by its /proc path: writes through memfd_create's own
    descriptor (one flagged "no notify" by recent kernels, as for other files with no name)
    reach no inotify watch, writes through one opened by path do."""
    made = posix.memfd_create("checker-output")
    path: str | None
    try:
        out = posix.open(f"/proc/self/fd/{made}", posix.O_RDWR | posix.O_CLOEXEC)
    except OSError:  # (no /proc: the judge asks the file's offset after every run)
        out, path = made, None
    else:
        posix.close(made)
        path = f"/proc/self/fd/{out}"
    fflush = libc.function("fflush")
    fflush(None)
    for fd in streams:
        posix.dup2(out, fd)
    if 2 in streams:
        _unbuffered(libc)
    return out, path, fflush


def _unbuffered(libc: Library) -> None:
    """C's stdout written as the checker prints, in order with its stderr: on a file it is
    otherwise fully buffered, and every line the checker wrote to stderr came first. (A
    spawned worker's interpreter, run with -u, did it already; a fork's may not have.)"""
    try:
        libc.function("setvbuf")(libc.pointer("stdout"), None, _IONBF, 0)
    except (AttributeError, ValueError):  # (no such symbols: flushed after each run still)
        pass


_IONBF = 2


def spawned(argv: list[str]) -> None:
    """The new interpreter's work (:data:`BOOT`): ``argv`` is the descriptors of its two
    pipes and of the judging word, the library and the function."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pmemsim decides
    rfd, wfd, word = (int(a) for a in argv[:3])
    library, function = argv[3:5]
    judging = mmap.mmap(word, WORD)
    posix.close(word)
    serve(lambda: c_judge(library, function, streams=(1, 2)), rfd, wfd, judging)
