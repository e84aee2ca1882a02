import Foundation
import MoETensor
#if canImport(Glibc)
import Glibc
#endif

/// An output folder built under a temporary name and renamed into place when complete. Inputs are
/// never touched; if the work fails the temporary folder is removed and nothing appears.
///
/// A resumable one (`resumeKey` given) is built in `.<name>.partial` beside the output, with the key (what
/// was asked: settings and input fingerprints) in `.journal/job`. Killed, it stays; run again with the same
/// key, the work continues from its journal and the files already finished (the writers skip whole shards
/// and resume a shard after its last durable layer), giving the same bytes. A different key starts over.
/// A lock keeps two processes from building the same output.
public final class AtomicDirectory {
    public let final: URL
    public let staging: URL
    /// What a resumed run may reuse (a journal that records nothing when the output is not resumable).
    public let journal: Journal
    /// Whether work of an earlier, interrupted run with the same key was found.
    public let resuming: Bool
    private var lock: OutputLock?
    private let overwrite: Bool
    /// Input folders that must not have changed when the output is committed (see `FolderFingerprint`).
    public var inputs: [FolderFingerprint] = []

    public init(_ final: URL, overwrite: Bool = false, resumeKey: String? = nil) throws {
        self.final = final.standardizedFileURL
        self.overwrite = overwrite
        let fm = FileManager.default
        if fm.fileExists(atPath: self.final.path) && !overwrite {
            throw CheckpointError(file: self.final.path, "already exists (pass --overwrite to replace it)")
        }
        let parent = self.final.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        // One writer per output, resumable or not: a second process refuses, naming the first. Checked again under the
        // lock: another writer may have committed between the check above and the lock.
        lock = try OutputLock(for: self.final)
        if fm.fileExists(atPath: self.final.path) && !overwrite {
            lock?.release()
            throw CheckpointError(file: self.final.path, "already exists (pass --overwrite to replace it)")
        }
        guard let resumeKey else {
            staging = parent.appendingPathComponent(".\(self.final.lastPathComponent).partial-\(getpid())")
            try? fm.removeItem(at: staging)
            try fm.createDirectory(at: staging, withIntermediateDirectories: false)
            journal = Journal(directory: nil)
            resuming = false
            return
        }
        staging = parent.appendingPathComponent(".\(self.final.lastPathComponent).partial")
        let jdir = staging.appendingPathComponent(".journal")
        let keyURL = jdir.appendingPathComponent("job")
        if let old = fm.contents(atPath: keyURL.path), old == Data(resumeKey.utf8) {
            resuming = true
        } else {
            removeAtomically(staging)
            try fm.createDirectory(at: jdir, withIntermediateDirectories: true)
            try Journal.atomicWrite(Data(resumeKey.utf8), to: keyURL)
            resuming = false
        }
        journal = Journal(directory: jdir)
    }

    deinit { unlock() }

    private func unlock() {
        lock?.release()
        lock = nil
    }

    public func url(_ name: String) -> URL { staging.appendingPathComponent(name) }

    /// Moves the staging folder, without its journal, to its final name (replacing an older one when allowed).
    public func commit() throws {
        for i in inputs { try i.verifyUnchanged("before writing \(final.lastPathComponent)") }
        let fm = FileManager.default
        if let dir = journal.directory { try? fm.removeItem(at: dir) }
        if fm.fileExists(atPath: final.path) {
            guard overwrite else { throw CheckpointError(file: final.path, "already exists (pass --overwrite to replace it)") }
            removeAtomically(final)
        }
        guard rename(staging.path, final.path) == 0 else {
            throw CheckpointError(file: final.path, "cannot move the finished output into place")
        }
        unlock()
    }

    public func abandon() {
        removeAtomically(staging)
        unlock()
    }

    /// Runs `body` in the staging folder, then commits; abandons on error.
    public static func write(_ final: URL, overwrite: Bool = false, resumeKey: String? = nil, _ body: (AtomicDirectory) throws -> Void) throws {
        let d = try AtomicDirectory(final, overwrite: overwrite, resumeKey: resumeKey)
        try d.finish(body)
    }

    /// Runs `body` in the staging folder, then commits; abandons on error (a kill leaves a resumable folder).
    public func finish(_ body: (AtomicDirectory) throws -> Void) throws {
        do {
            try body(self)
            try commit()
        } catch {
            // A full disk keeps a resumable output's finished work (journal, finished shards) for the next run.
            if let e = error as? CheckpointError, e.diskFull, journal.directory != nil {
                unlock()
            } else {
                abandon()
            }
            throw error
        }
    }
}

/// Named records of finished work (a layer's search, a block's choice, a shard's durable length), each
/// written atomically as one file, so an interrupted stage picks them up instead of computing them again.
/// Without a directory it records nothing and every value is computed.
public final class Journal: @unchecked Sendable {
    public let directory: URL?
    public init(directory: URL?) { self.directory = directory }
    public static let none = Journal(directory: nil)

    static func atomicWrite(_ data: Data, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        try data.write(to: tmp)
        guard rename(tmp.path, url.path) == 0 else { throw CheckpointError(file: url.path, "cannot record work done") }
    }

    private func url(_ name: String) -> URL? { directory?.appendingPathComponent(name + ".json") }

    public func load<T: Decodable>(_ name: String, as type: T.Type = T.self) -> T? {
        guard let u = url(name), let data = FileManager.default.contents(atPath: u.path) else { return nil }
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try? dec.decode(T.self, from: data)
    }

    public func save<T: Encodable>(_ name: String, _ value: T) throws {
        guard let u = url(name) else { return }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try Journal.atomicWrite(try enc.encode(value), to: u)
        Journal.killHook.recorded()
    }

    /// Test hook: with MOEPRESS_KILL_AFTER_RECORDS=N in the environment, the process exits at once (as a kill
    /// would, without any clean-up) after the N-th record, so tests can check that a run resumes.
    final class KillHook: @unchecked Sendable {
        let limit = ProcessInfo.processInfo.environment["MOEPRESS_KILL_AFTER_RECORDS"].flatMap { Int($0) }
        let lock = NSLock()
        var count = 0
        func recorded() {
            guard let limit else { return }
            lock.lock()
            count += 1
            let stop = count >= limit
            lock.unlock()
            if stop { _exit(137) }
        }
    }
    static let killHook = KillHook()

    /// Counts finished work kept outside a journal (a training checkpoint) for the test hook above.
    public static func recordedElsewhere() { killHook.recorded() }

    /// The recorded value of `name`, or `compute()`'s, recorded.
    public func record<T: Codable>(_ name: String, _ compute: () throws -> T) throws -> T {
        if let v: T = load(name) { return v }
        let v = try compute()
        try save(name, v)
        return v
    }
}

/// An exclusive claim on an output path while a process builds it: `flock` on `.<name>.lock` beside the output, held
/// until released or the process ends (a kill releases it too). The file holds its owner (pid, command line, start
/// time), so a second writer names it. After locking, the path is checked to still be the locked file: a release
/// unlinks it, and a process that opened it just before must not believe it holds the new one.
public final class OutputLock: @unchecked Sendable {
    public let url: URL
    private var fd: Int32 = -1
    private let guardFD = NSLock()

    public init(for output: URL) throws {
        let out = output.standardizedFileURL
        url = out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).lock")
        while true {
            let f = open(url.path, O_RDWR | O_CREAT, 0o644)
            guard f >= 0 else { throw CheckpointError(file: url.path, "cannot create (\(String(cString: strerror(errno))))") }
            guard flock(f, LOCK_EX | LOCK_NB) == 0 else {
                let owner = Self.owner(f)
                close(f)
                throw CheckpointError(file: out.path, "another process is writing this output: \(owner) (it holds \(url.lastPathComponent))")
            }
            var a = stat(), b = stat()
            if fstat(f, &a) == 0, stat(url.path, &b) == 0, a.st_ino == b.st_ino, a.st_dev == b.st_dev {
                fd = f
                break
            }
            close(f)   // released and unlinked meanwhile: lock the file now at the path
        }
        let args = CommandLine.arguments.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
        let since = ISO8601DateFormatter().string(from: Date())
        let text = Array("pid \(getpid()), \(args.prefix(300)), since \(since)".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit { release() }

    /// The owner line a locked file holds ("pid N, command, since T"), or a note that it holds none yet.
    static func owner(_ f: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = pread(f, &buf, buf.count, 0)
        return n > 0 ? String(decoding: buf.prefix(n), as: UTF8.self) : "a process that has not yet written its name"
    }

    public func release() {
        guardFD.lock(); defer { guardFD.unlock() }
        guard fd >= 0 else { return }
        unlink(url.path)
        close(fd)
        fd = -1
    }
}
