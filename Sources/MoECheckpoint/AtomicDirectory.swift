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
    private var lockFD: Int32 = -1

    public init(_ final: URL, overwrite: Bool = false, resumeKey: String? = nil) throws {
        self.final = final.standardizedFileURL
        let fm = FileManager.default
        if fm.fileExists(atPath: self.final.path) && !overwrite {
            throw CheckpointError(file: self.final.path, "already exists (pass --overwrite to replace it)")
        }
        let parent = self.final.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        guard let resumeKey else {
            staging = parent.appendingPathComponent(".\(self.final.lastPathComponent).partial-\(getpid())")
            try? fm.removeItem(at: staging)
            try fm.createDirectory(at: staging, withIntermediateDirectories: false)
            journal = Journal(directory: nil)
            resuming = false
            return
        }
        staging = parent.appendingPathComponent(".\(self.final.lastPathComponent).partial")
        let lockURL = parent.appendingPathComponent(".\(self.final.lastPathComponent).lock")
        lockFD = open(lockURL.path, O_RDWR | O_CREAT, 0o644)
        guard lockFD >= 0 else { throw CheckpointError(file: lockURL.path, "cannot create (\(String(cString: strerror(errno))))") }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            close(lockFD)
            lockFD = -1
            throw CheckpointError(file: self.final.path, "another process is writing this output (\(lockURL.lastPathComponent) is locked)")
        }
        let jdir = staging.appendingPathComponent(".journal")
        let keyURL = jdir.appendingPathComponent("job")
        if let old = fm.contents(atPath: keyURL.path), old == Data(resumeKey.utf8) {
            resuming = true
        } else {
            try? fm.removeItem(at: staging)
            try fm.createDirectory(at: jdir, withIntermediateDirectories: true)
            try Journal.atomicWrite(Data(resumeKey.utf8), to: keyURL)
            resuming = false
        }
        journal = Journal(directory: jdir)
    }

    deinit { unlock() }

    private func unlock() {
        guard lockFD >= 0 else { return }
        unlink(final.deletingLastPathComponent().appendingPathComponent(".\(final.lastPathComponent).lock").path)
        close(lockFD)
        lockFD = -1
    }

    public func url(_ name: String) -> URL { staging.appendingPathComponent(name) }

    /// Moves the staging folder, without its journal, to its final name (replacing an older one when allowed).
    public func commit() throws {
        let fm = FileManager.default
        if let dir = journal.directory { try? fm.removeItem(at: dir) }
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        guard rename(staging.path, final.path) == 0 else {
            throw CheckpointError(file: final.path, "cannot move the finished output into place")
        }
        unlock()
    }

    public func abandon() {
        try? FileManager.default.removeItem(at: staging)
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
            abandon()
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
