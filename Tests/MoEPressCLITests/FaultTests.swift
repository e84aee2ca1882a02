import Foundation
import Testing
import MoECheckpoint
#if canImport(Glibc)
import Glibc
#endif

/// Faults at any instant (issue: reliability II): SIGKILL at random times across every stage of `moepress run`, a full
/// disk, an input that changes during a run, and two writers of one output.
@Suite(.serialized) struct FaultTests {
    /// calibrate → prune → decompose → heal on mixtral-ref, small enough for `swift test`.
    func recipe(_ dir: TempDir, model: String = CLI.shared.appendingPathComponent("models/mixtral-ref").path) throws -> String {
        let text = """
        model: \(model)
        seed: 5
        calibration: {data: \(CLI.shared.path)/data/calib, samples: 8, seq_len: 64}
        stages:
          - prune: {method: moei2, ratio: 0.25, generations: 4, population: 12}
          - decompose: {method: svdllm, ratio: 0.6}
          - heal: {steps: 6, lr: 0.001, lora_rank: 4, batch: 2, seq_len: 64}
        export: none
        """
        try text.write(toFile: dir.path("r.yaml"), atomically: true, encoding: .utf8)
        return dir.path("r.yaml")
    }

    /// Every file under a run folder's stage outputs (`NN-stage/…`), hidden staging folders and run-level files aside.
    /// (The run folder's own path, which an adapter's `base_model_name_or_path` holds, is replaced by `<run>`.)
    static func stageFiles(_ root: String) -> [String: Data] {
        var out: [String: Data] = [:]
        guard let e = FileManager.default.enumerator(atPath: root) else { return out }
        while let f = e.nextObject() as? String {
            let top = f.split(separator: "/").first.map(String.init) ?? f
            // Model and adapter files (logs and reports hold wall times, which no two runs share).
            guard top.first?.isNumber == true, !top.hasSuffix(".partial"), f.contains("/model/") || f.contains("/adapter/"), !f.hasSuffix("log.json"),
                  let d = FileManager.default.contents(atPath: root + "/" + f) else { continue }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + f, isDirectory: &isDir), isDir.boolValue { continue }
            let text = { String(decoding: d, as: UTF8.self).replacingOccurrences(of: root, with: "<run>")
                .replacingOccurrences(of: root.replacingOccurrences(of: "/", with: "\\/"), with: "<run>") }
            out[f] = f.hasSuffix(".json") ? Data(text().utf8) : d
        }
        return out
    }

    /// Starts `moepress args`, kills it with SIGKILL after `seconds` (if it is still running); returns whether it was
    /// killed, and its exit status otherwise.
    static func runKilled(_ args: [String], after seconds: Double) throws -> (killed: Bool, status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = args
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        var killed = false
        if p.isRunning { kill(p.processIdentifier, SIGKILL); killed = true }
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (killed && p.terminationReason == .uncaughtSignal, p.terminationStatus, String(decoding: e, as: UTF8.self))
    }

    /// SIGKILL at seeded random instants, at least `MOEPRESS_SOAK_KILLS` times (default 10; the long run in BENCHMARKS
    /// "Reliability" uses ≥ 50), each followed by `--resume`. After every kill, whatever stands under a final name is
    /// complete (byte-identical to the uninterrupted run's); at the end the resumed run equals it byte for byte.
    /// Guards against a kill that leaves a partial output visible, or a resume that computes something else.
    @Test func randomKillsResumeToTheSameBytes() throws {
        let env = ProcessInfo.processInfo.environment
        let wanted = env["MOEPRESS_SOAK_KILLS"].flatMap(Int.init) ?? 10
        var state = env["MOEPRESS_SOAK_SEED"].flatMap(UInt64.init) ?? 2026
        func unit() -> Double { state = state &* 6364136223846793005 &+ 1442695040888963407; return Double(state >> 11) / Double(1 << 53) }
        let dir = TempDir()
        let r = try recipe(dir)
        let t0 = Date()
        let whole = try CLI.run(["run", r, "--output", dir.path("whole"), "--quiet"])
        #expect(whole.status == 0, "\(whole.stderr)")
        let span = max(1.0, Date().timeIntervalSince(t0))
        let reference = Self.stageFiles(dir.path("whole"))
        #expect(reference.keys.contains { $0.hasPrefix("03-heal/") } && reference.count >= 10, "\(reference.keys.sorted())")

        var kills = 0, rounds = 0, attempts = 0
        var byStage: [String: Int] = [:]
        while kills < wanted && attempts < wanted * 6 {
            rounds += 1
            let out = dir.path("soak-\(rounds)")
            while kills < wanted && attempts < wanted * 6 {
                attempts += 1
                let stages = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
                let (killed, status, stderr) = try Self.runKilled(["run", r, "--output", out, "--resume", "--quiet"], after: unit() * span)
                if !killed {
                    #expect(status == 0, "attempt \(attempts) ended with \(status): \(stderr)")
                    break
                }
                kills += 1
                // Which stage the kill fell in: the one whose staging folder exists, or the next one to start.
                let now = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
                let stage = now.first { $0.hasSuffix(".partial") }.map { String($0.dropLast(".partial".count)) }
                    ?? (now.count > stages.count ? "between stages" : "start")
                byStage[stage, default: 0] += 1
                // Nothing partial under a final name: every stage file present equals the uninterrupted run's.
                for (k, v) in Self.stageFiles(out) { #expect(reference[k] == v, "after kill \(kills) (\(stage)): \(k) differs or is not the reference's") }
            }
            let done = try CLI.run(["run", r, "--output", out, "--resume", "--quiet"])
            #expect(done.status == 0, "\(done.stderr)")
            let got = Self.stageFiles(out)
            #expect(Set(got.keys) == Set(reference.keys), "round \(rounds): \(Set(got.keys).symmetricDifference(reference.keys).sorted())")
            for (k, v) in reference { #expect(got[k] == v, "round \(rounds): \(k) differs after resuming") }
            let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).filter { $0.hasSuffix(".partial") || $0.hasSuffix(".lock") }
            #expect(leftovers.isEmpty, "\(leftovers)")
            try? FileManager.default.removeItem(atPath: out)
        }
        #expect(kills >= wanted, "only \(kills) kills landed in \(attempts) attempts")
        if env["MOEPRESS_TEST_VERBOSE"] == "1" || env["MOEPRESS_SOAK_KILLS"] != nil {
            print("soak: \(kills) kills in \(attempts) attempts over \(rounds) runs (run \(String(format: "%.1f", span)) s); by stage: " +
                  byStage.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
    }

    /// A second writer of one output refuses at once, naming the first (its pid and command), for a command's output
    /// and for a run folder; once the first is gone, the same command runs.
    @Test func secondWriterIsRefusedWithTheOwnerNamed() throws {
        let t = TempDir()
        let out = t.url.appendingPathComponent("pruned")
        let prune = ["prune", "--model", CLI.fixture("mixtral"), "--method", "moeits", "--ratio", "0.25", "--output", out.path]
        var lock: OutputLock? = try OutputLock(for: out)
        let r = try CLI.run(prune)
        #expect(r.status == 1 && r.stderr.contains("another process is writing this output: pid \(getpid())") && r.stderr.contains(out.path), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
        lock?.release()
        lock = nil
        let ok = try CLI.run(prune + ["--quiet"])
        #expect(ok.status == 0, "\(ok.stderr)")

        let runDir = t.url.appendingPathComponent("run")
        let held = try OutputLock(for: runDir)
        let rr = try CLI.run(["run", try recipe(t), "--output", runDir.path, "--quiet"])
        #expect(rr.status == 1 && rr.stderr.contains("pid \(getpid())"), "\(rr.stderr)")
        held.release()
    }

    /// An input file replaced while a run is between stages stops the run with the file named; nothing is
    /// committed from the mixed inputs. (The run is paused with SIGSTOP once its first stage is done.)
    @Test func inputReplacedDuringARunIsNamed() throws {
        let t = TempDir()
        let src = CLI.shared.appendingPathComponent("models/mixtral-ref")
        let model = t.url.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: model.appendingPathComponent(f))
        }
        try FileManager.default.createSymbolicLink(at: model.appendingPathComponent("model.safetensors"), withDestinationURL: src.appendingPathComponent("model.safetensors"))
        let r = try recipe(t, model: model.path)
        let out = t.path("run")
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = ["run", r, "--output", out, "--quiet"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(600)
        while p.isRunning, !FileManager.default.fileExists(atPath: out + "/01-prune"), Date() < deadline { usleep(10_000) }
        #expect(p.isRunning, "the run ended before its first stage could be observed")
        kill(p.processIdentifier, SIGSTOP)
        // The shard is replaced by a copy (a new file under the same name), as a re-download would.
        let copy = t.url.appendingPathComponent("copy.safetensors")
        try FileManager.default.copyItem(at: src.appendingPathComponent("model.safetensors"), to: copy)
        #expect(rename(copy.path, model.appendingPathComponent("model.safetensors").path) == 0)
        kill(p.processIdentifier, SIGCONT)
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let stderr = String(decoding: e, as: UTF8.self)
        #expect(p.terminationStatus == 1 && stderr.contains("model.safetensors") && stderr.contains("replaced or rewritten during the run"), "\(stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/03-heal"))
    }

    /// Unit level: the fingerprint notices a file replaced, rewritten, added or removed, and an output whose input
    /// changed is not committed.
    @Test func fingerprintNoticesEveryChange() throws {
        let t = TempDir()
        let d = t.url.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        try Data("a".utf8).write(to: d.appendingPathComponent("a.bin"))
        try Data("b".utf8).write(to: d.appendingPathComponent("b.bin"))
        let changes: [(String, () throws -> Void)] = [
            ("rewritten", { usleep(20_000); try Data("A".utf8).write(to: d.appendingPathComponent("a.bin")) }),
            ("appeared", { try Data("c".utf8).write(to: d.appendingPathComponent("c.bin")) }),
            ("was removed", { try FileManager.default.removeItem(at: d.appendingPathComponent("b.bin")) }),
        ]
        for (what, change) in changes {
            let fp = try FolderFingerprint(d)
            try fp.verifyUnchanged("now")
            try change()
            #expect(throws: CheckpointError.self) { try fp.verifyUnchanged("now") }
            do { try fp.verifyUnchanged("now") } catch { #expect("\(error)".contains(what.split(separator: " ").last.map(String.init) ?? what), "\(error)") }
        }
        let fp = try FolderFingerprint(d)
        let out = t.url.appendingPathComponent("out")
        let target = try AtomicDirectory(out)
        target.inputs = [fp]
        try Data("x".utf8).write(to: d.appendingPathComponent("d.bin"))
        #expect(throws: CheckpointError.self) { try target.finish { try Data("o".utf8).write(to: $0.url("o.txt")) } }
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    /// Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN, as on the CI machines): the disk-full tests
    /// need a small file system of their own, and show as skipped where there is none.
    static let canMount: Bool = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-mountprobe-\(getpid())")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: d) }
        guard "size=64k".withCString({ mount("tmpfs", d.path, "tmpfs", 0, $0) }) == 0 else { return false }
        umount(d.path)
        return true
    }()

    /// A tmpfs of `kib` KiB at a fresh folder, unmounted by the returned closure.
    static func smallDisk(kib: Int) throws -> (URL, () -> Void) {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        guard "size=\(kib)k".withCString({ mount("tmpfs", d.path, "tmpfs", 0, $0) }) == 0 else { throw CheckpointError(file: d.path, "mount failed") }
        return (d, { umount(d.path); try? FileManager.default.removeItem(at: d) })
    }

    /// The writer and the calibration cache each hit a full disk: the error names the path and the bytes needed,
    /// nothing stands under the final name, and the same command completes (resuming) once space is freed, giving
    /// the bytes of a run that never ran out.
    @Test(.enabled(if: canMount, "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"))
    func fullDiskIsNamedAndResumable() throws {
        let t = TempDir()
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        // Reference outputs on the ordinary disk.
        let calibArgs = ["calibrate", "--model", model, "--calib-dir", CLI.shared.appendingPathComponent("data/calib").path,
                         "--samples", "4", "--seq-len", "32", "--quiet"]
        let refCal = try CLI.run(calibArgs + ["--output", t.path("cal")])
        #expect(refCal.status == 0, "\(refCal.stderr)")
        let prune = ["prune", "--model", model, "--method", "frequency", "--calib", t.path("cal"), "--ratio", "0.25", "--quiet"]
        let refPrune = try CLI.run(prune + ["--output", t.path("pruned")])
        #expect(refPrune.status == 0, "\(refPrune.stderr)")

        let (disk, unmount) = try Self.smallDisk(kib: 60 * 1024)
        defer { unmount() }
        // A filler leaves too little room for either output (the pruned model is ~37 MB, the cache a few MB).
        let filler = disk.appendingPathComponent("filler")
        for (args, out) in [(calibArgs, "cal"), (prune, "pruned")] {
            let f = fopen(filler.path, "w"); fclose(f)
            #expect(truncate(filler.path, 0) == 0)
            let room = 1024 * 1024
            let free = DiskSpace.available(at: disk) ?? 0
            let fd = open(filler.path, O_WRONLY)
            #expect(posix_fallocate(fd, 0, off_t(max(0, free - room))) == 0)
            close(fd)
            let target = disk.appendingPathComponent(out).path
            let r = try CLI.run(args + ["--output", target])
            // Refused up front here (the commands check the room before work); the writers' own ENOSPC path is below.
            #expect(r.status == 1 && r.stderr.contains(disk.path) && r.stderr.contains("free") && r.stderr.contains("MiB"), "\(out): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: target), "\(out): something stands under the final name")
            try FileManager.default.removeItem(at: filler)
            let again = try CLI.run(args + ["--output", target])
            #expect(again.status == 0, "\(out): \(again.stderr)")
            let a = try ResumeTests.files(t.path(out)), b = try ResumeTests.files(target)
            #expect(Set(a.keys) == Set(b.keys) && a.allSatisfy { b[$0.key] == $0.value }, "\(out) differs from the run that had room")
        }
    }

    /// The writers themselves, below any up-front check: a full disk during a write is an error naming the file and
    /// the bytes, never a SIGBUS (mapped outputs reserve their blocks first), and the temporary file goes.
    @Test(.enabled(if: canMount, "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"))
    func writersReportAFullDisk() throws {
        let (disk, unmount) = try Self.smallDisk(kib: 256)
        defer { unmount() }
        let big = SafeTensorsWriter.Entry("w", raw: Data(count: 1 << 20), dtype: .f32, shape: [1 << 18])
        let url = disk.appendingPathComponent("model.safetensors")
        do {
            try SafeTensorsWriter.write([big], to: url)
            Issue.record("a 1 MiB file was written to a 256 KiB disk")
        } catch {
            #expect("\(error)".contains(url.path) && "\(error)".contains("disk is full") && "\(error)".contains("still to write"), "\(error)")
        }
        do {
            _ = try MappedSafeTensorsOutput(disk.appendingPathComponent("cache.safetensors"), tensors: [("x", .f32, [1 << 18])])
            Issue.record("a 1 MiB mapped output was made on a 256 KiB disk")
        } catch {
            #expect("\(error)".contains("cache.safetensors") && "\(error)".contains("disk is full"), "\(error)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: disk.path)
        #expect(left.isEmpty, "\(left)")
    }
}

/// Determinism however the work is split: the same inputs and seed give byte-identical outputs on 1 and 2 threads.
/// (A product split into as many BLAS calls as threads rounded differently: OpenBLAS picks other kernels for small
/// products. Splits now use fixed blocks.) Guards against a split that depends on the thread count.
@Suite struct ThreadCountTests {
    @Test func trainingAndSearchAreTheSameOnOneAndTwoThreads() throws {
        let t = TempDir()
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        let data = CLI.shared.appendingPathComponent("data/calib").path
        for threads in ["1", "2"] {
            let h = try CLI.run(["heal", "--model", model, "--data", data, "--steps", "3", "--batch", "2", "--seq-len", "64", "--lora-rank", "4",
                                 "--seed", "1", "--threads", threads, "--output", t.path("heal-\(threads)"), "--quiet"])
            #expect(h.status == 0, "\(h.stderr)")
            let p = try CLI.run(["prune", "--model", model, "--method", "moei2", "--calib-dir", data, "--samples", "4", "--seq-len", "32",
                                 "--ratio", "0.25", "--population", "8", "--generations", "2", "--seed", "3", "--threads", threads,
                                 "--output", t.path("prune-\(threads)"), "--quiet"])
            #expect(p.status == 0, "\(p.stderr)")
        }
        for (a, b) in [("heal-1/adapter_model.safetensors", "heal-2/adapter_model.safetensors"),
                       ("prune-1/model.safetensors", "prune-2/model.safetensors"), ("prune-1/plan.json", "prune-2/plan.json")] {
            let x = FileManager.default.contents(atPath: t.path(a)), y = FileManager.default.contents(atPath: t.path(b))
            #expect(x != nil && x == y, "\(a) and \(b) differ")
        }
    }
}

/// Inputs on a read-only file system: every command that reads a model folder works, and writes only its output.
@Suite(.serialized) struct ReadOnlyInputTests {
    @Test(.enabled(if: FaultTests.canMount, "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"))
    func commandsRunOnAReadOnlyModelFolder() throws {
        let t = TempDir()
        let (disk, unmount) = try FaultTests.smallDisk(kib: 8 * 1024)
        defer { unmount() }
        let model = disk.appendingPathComponent("m")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: CLI.fixture("mixtral")), to: model)
        #expect(mount("tmpfs", disk.path, "tmpfs", UInt(MS_REMOUNT | MS_RDONLY), nil) == 0, "remount read-only: \(String(cString: strerror(errno)))")
        #expect(FileManager.default.createFile(atPath: model.appendingPathComponent("probe").path, contents: Data()) == false, "the folder is not read-only")
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        for args in [["inspect", model.path, "--verify"],
                     ["logits", "--model", model.path, "--ids-file", t.path("ids.json"), "--output", t.path("l.safetensors")],
                     ["prune", "--model", model.path, "--method", "moeits", "--ratio", "0.25", "--output", t.path("p"), "--quiet"]] {
            let r = try CLI.run(args)
            #expect(r.status == 0, "\(args[0]) on a read-only model folder: \(r.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: t.path("p/model.safetensors")))
    }
}
