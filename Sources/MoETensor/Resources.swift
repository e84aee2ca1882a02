import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a process costs, measured by stage: wall time, peak anonymous memory (RssAnon: heap and other
/// memory the kernel cannot evict; mapped weights are file-backed and do not count), peak resident set
/// (which does count the mapped weights the page cache holds for us), and bytes read from and written to
/// storage (/proc/self/io; pages already in the page cache cost no read). A background thread samples
/// RssAnon every few milliseconds, since the kernel keeps no peak of it.
public final class ResourceMonitor: Sendable {
    public struct Stage: Codable, Sendable {
        public var name: String
        public var wallSeconds: Double
        public var peakRssAnonMiB: Double
        public var peakRssMiB: Double
        public var readMiB: Double
        public var writtenMiB: Double

        enum CodingKeys: String, CodingKey {
            case name
            case wallSeconds = "wall_seconds", peakRssAnonMiB = "peak_rss_anon_mib", peakRssMiB = "peak_rss_mib"
            case readMiB = "read_mib", writtenMiB = "written_mib"
        }
    }

    /// What a piece of work was estimated to cost before it started (printed, and kept in the report to
    /// set beside what it did cost).
    public struct Estimate: Codable, Sendable {
        public var name: String
        public var seconds: Double
        public var memoryMiB: Double?
        public var diskMiB: Double?

        public init(name: String, seconds: Double, memoryBytes: Int? = nil, diskBytes: Int? = nil) {
            self.name = name
            self.seconds = seconds
            self.memoryMiB = memoryBytes.map { Double($0) / 1048576 }
            self.diskMiB = diskBytes.map { Double($0) / 1048576 }
        }

        enum CodingKeys: String, CodingKey {
            case name, seconds, memoryMiB = "memory_mib", diskMiB = "disk_mib"
        }
    }

    /// The whole process so far, its stages and the estimates made before them, for JSON reports.
    public struct Report: Codable, Sendable {
        public var wallSeconds: Double
        public var peakRssAnonMiB: Double
        public var peakRssMiB: Double
        public var readMiB: Double
        public var writtenMiB: Double
        public var stages: [Stage]
        public var estimates: [Estimate]
        /// What the work ran with: its compute threads, and the memory budget of its layer-major passes
        /// (commands with one; the default is 3/4 of the memory available at start).
        public var threads: Int
        public var memoryBudgetMiB: Double?
        /// Work that options decide, counted where it is done (e.g. `weights_checked`: tensors scanned for
        /// NaN/Inf by --check-weights; `task_batches`: model passes of `eval tasks`).
        public var counts: [String: Int]

        enum CodingKeys: String, CodingKey {
            case wallSeconds = "wall_seconds", peakRssAnonMiB = "peak_rss_anon_mib", peakRssMiB = "peak_rss_mib"
            case readMiB = "read_mib", writtenMiB = "written_mib", stages, estimates
            case threads, memoryBudgetMiB = "memory_budget_mib", counts
        }
    }

    struct State {
        var processPeakAnon = 0
        var stagePeakAnon = 0
        var stagePeakRss = 0
        var stages: [Stage] = []
        var estimates: [Estimate] = []
        var running = false
        var lastNote: UInt64 = 0
        var memoryBudget: Int?
        var counts: [String: Int] = [:]
    }

    public static let shared = ResourceMonitor()
    private let state = Mutex(State())
    private let start = Date()
    private let startIO = ResourceMonitor.io()

    /// Starts the sampler (idempotent; commands call it at start-up).
    public func start(intervalMicroseconds: UInt32 = 5000) {
        let already = state.withLock { s -> Bool in
            defer { s.running = true }
            return s.running
        }
        if already { return }
        // A plain pthread: it must run however busy the compute threads keep the cores.
        Self.interval = intervalMicroseconds
        var thread = pthread_t()
        let ok = pthread_create(&thread, nil, { _ in
            while true {
                ResourceMonitor.shared.sample()
                usleep(ResourceMonitor.interval)
            }
        }, nil)
        if ok == 0 { pthread_detach(thread) }
    }

    nonisolated(unsafe) static var interval: UInt32 = 5000

    /// Records the current RssAnon and RSS into the peaks.
    public func sample() {
        let (anon, rss) = Self.memory()
        state.withLock { s in
            s.processPeakAnon = max(s.processPeakAnon, anon)
            s.stagePeakAnon = max(s.stagePeakAnon, anon)
            s.stagePeakRss = max(s.stagePeakRss, rss)
        }
    }

    /// Samples now if the sampler runs and a few milliseconds have passed since the last explicit sample:
    /// compute code calls this where its live memory peaks (the end of an attention or MoE block), which a
    /// periodic sampler competing with the compute threads for the cores can miss.
    public func notePeak() {
        let now = DispatchTime.now().uptimeNanoseconds
        let due = state.withLock { s -> Bool in
            guard s.running, now >= s.lastNote + 2_000_000 else { return false }
            s.lastNote = now
            return true
        }
        if due { sample() }
    }

    /// Runs `body` as a named stage and records its costs.
    public func stage<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        sample()
        let t0 = Date(), io0 = Self.io()
        let (anon0, rss0) = Self.memory()
        state.withLock { s in s.stagePeakAnon = anon0; s.stagePeakRss = rss0 }
        defer {
            sample()
            let io1 = Self.io()
            state.withLock { s in
                s.stages.append(Stage(name: name, wallSeconds: Date().timeIntervalSince(t0), peakRssAnonMiB: Double(s.stagePeakAnon) / 1048576,
                                      peakRssMiB: Double(s.stagePeakRss) / 1048576, readMiB: Double(io1.read - io0.read) / 1048576,
                                      writtenMiB: Double(io1.written - io0.written) / 1048576))
            }
        }
        return try body()
    }

    public var stages: [Stage] { state.withLock { $0.stages } }

    /// Keeps an estimate for the report.
    public func record(_ e: Estimate) { state.withLock { $0.estimates.append(e) } }

    public var estimates: [Estimate] { state.withLock { $0.estimates } }

    /// Keeps the memory budget the work runs under, for the report.
    public func noteMemoryBudget(bytes: Int) { state.withLock { $0.memoryBudget = bytes } }

    /// Adds `n` to the report's count `name`.
    public func count(_ name: String, _ n: Int = 1) { state.withLock { $0.counts[name, default: 0] += n } }

    public func report() -> Report {
        sample()
        let io1 = Self.io()
        let s = state.withLock { $0 }
        return Report(wallSeconds: Date().timeIntervalSince(start), peakRssAnonMiB: Double(s.processPeakAnon) / 1048576,
                      peakRssMiB: Double(Self.peakRSS()) / 1048576, readMiB: Double(io1.read - startIO.read) / 1048576,
                      writtenMiB: Double(io1.written - startIO.written) / 1048576, stages: s.stages, estimates: s.estimates,
                      threads: Compute.threads, memoryBudgetMiB: s.memoryBudget.map { Double($0) / 1048576 }, counts: s.counts)
    }

    /// Current RssAnon and VmRSS in bytes, from /proc/self/status (0 where unavailable).
    public static func memory() -> (anon: Int, rss: Int) {
        guard let text = readSmallFile("/proc/self/status") else { return (0, 0) }
        return (field(text, "RssAnon:") * 1024, field(text, "VmRSS:") * 1024)
    }

    /// Peak resident set (VmHWM) in bytes.
    public static func peakRSS() -> Int { readSmallFile("/proc/self/status").map { field($0, "VmHWM:") * 1024 } ?? 0 }

    /// Bytes this process made storage read and write so far (/proc/self/io).
    public static func io() -> (read: Int, written: Int) {
        guard let text = readSmallFile("/proc/self/io") else { return (0, 0) }
        return (field(text, "read_bytes:"), field(text, "write_bytes:"))
    }

    /// Memory the kernel could give this process now (MemAvailable), in bytes; nil where unknown.
    public static func availableMemory() -> Int? {
        guard let text = readSmallFile("/proc/meminfo") else { return nil }
        let kb = field(text, "MemAvailable:")
        return kb > 0 ? kb * 1024 : nil
    }

    static func field(_ text: String, _ key: String) -> Int {
        guard let r = text.range(of: key) else { return 0 }
        let rest = text[r.upperBound...].drop { $0 == " " || $0 == "\t" }
        return Int(rest.prefix { $0.isNumber }) ?? 0
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 8192)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}
