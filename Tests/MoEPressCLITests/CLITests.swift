import Foundation
import Testing
import MoECheckpoint

/// Runs the `moepress` executable built beside the test bundle.
struct CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    static var shared: URL {
        ProcessInfo.processInfo.environment["MOEPRESS_SHARED"].map { URL(fileURLWithPath: $0) }
            ?? repository.deletingLastPathComponent().appendingPathComponent("shared")
    }
    static func fixture(_ name: String) -> String {
        repository.appendingPathComponent("Tests/MoEModelsTests/Fixtures/\(name)").path
    }

    static var binary: URL {
        var dir = Bundle.main.bundleURL
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("moepress")
    }

    /// Runs moepress with `args`, adding `env` to this process's environment.
    static func run(_ args: [String], env: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        if !env.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

final class TempDir {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-cli-\(UUID().uuidString)")
    init() { try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ n: String) -> String { url.appendingPathComponent(n).path }
}

@Suite(.serialized) struct CLITests {
    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: CLI.binary.path), "build moepress first: \(CLI.binary.path)")
    }

    @Test func inspectJSON() throws {
        let r = try CLI.run(["inspect", CLI.fixture("qwen2_moe"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(obj["modelType"] as? String == "qwen2_moe")
        #expect(obj["moeLayers"] as? [Int] == [0, 2])
        #expect(obj["totalParameters"] as? Int == 161_472)   // torch's count (tools/oracle manifest)
        #expect(obj["sharedExpertGated"] as? Bool == true)
    }

    @Test func inspectTableOnSharedModel() throws {
        let r = try CLI.run(["inspect", CLI.shared.appendingPathComponent("models/mixtral-ref").path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("mixtral (MixtralForCausalLM)"))
        #expect(r.stdout.contains("softmax, top-2, renormalised"))
    }

    @Test func logitsReproduceReference() throws {
        let t = TempDir()
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref")
        let out = t.path("logits.safetensors")
        let r = try CLI.run(["logits", "--model", model.path, "--ids-file", model.appendingPathComponent("reference/ids.json").path, "--output", out])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try SafeTensorsFile(path: out).tensor("logits")
        let want = try SafeTensorsFile(path: model.appendingPathComponent("reference/logits.safetensors").path).tensor("logits")
        #expect(got.shape == [300, 4096])
        #expect(got.maxAbsDifference(want) <= 1e-3)
    }

    @Test func malformedWeightsFailWithOneLineAndNoOutput() throws {
        let t = TempDir()
        let model = t.url.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture("mixtral") + "/config.json", toPath: model.appendingPathComponent("config.json").path)
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes[0] = 200  // header length 200, file ends after 8 bytes
        _ = FileManager.default.createFile(atPath: model.appendingPathComponent("model.safetensors").path, contents: Data(bytes))
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let out = t.path("out.safetensors")
        for args in [["inspect", model.path], ["logits", "--model", model.path, "--ids-file", t.path("ids.json"), "--output", out]] {
            let r = try CLI.run(args)
            #expect(r.status != 0)
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(r.stderr)")
            #expect(r.stderr.contains("model.safetensors") && r.stderr.contains("past the end"), "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func badInputsAreClearErrors() throws {
        let t = TempDir()
        try #"{"model_type": "gpt2"}"#.write(toFile: t.path("config.json"), atomically: true, encoding: .utf8)
        let r1 = try CLI.run(["inspect", t.url.path])
        #expect(r1.status != 0 && r1.stderr.contains("unsupported architecture") && r1.stderr.contains("deepseek_v3"))
        try "[1, 2, 99999]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let r2 = try CLI.run(["logits", "--model", CLI.fixture("olmoe"), "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors")])
        #expect(r2.status != 0 && r2.stderr.contains("outside the vocabulary"))
        try "not json".write(toFile: t.path("bad.json"), atomically: true, encoding: .utf8)
        let r3 = try CLI.run(["logits", "--model", CLI.fixture("olmoe"), "--ids-file", t.path("bad.json"), "--output", t.path("o.safetensors")])
        #expect(r3.status != 0 && r3.stderr.contains("bad.json"))
        #expect(!FileManager.default.fileExists(atPath: t.path("o.safetensors")))
    }

    @Test func tooLittleMemoryIsRefusedBeforeAnyWork() throws {
        let t = TempDir()
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let r = try CLI.run(["logits", "--model", CLI.fixture("olmoe"), "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors"),
                             "--max-memory", "10KB"])
        #expect(r.status != 0 && r.stderr.contains("--max-memory") && r.stderr.contains("need at least"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: t.path("o.safetensors")))
        let bad = try CLI.run(["logits", "--model", CLI.fixture("olmoe"), "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors"),
                               "--max-memory", "lots"])
        #expect(bad.status != 0)
    }

    /// Guards against a report whose figures are not measured: the stages are named, and the bytes written (to the
    /// page, as /proc/self/io counts them) are those of the 200 × 96 logits the command wrote, no fewer, no more than
    /// a few pages over.
    @Test func resourceReportByStage() throws {
        let t = TempDir()
        try "\((0..<200).map { ($0 * 7) % 96 })".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let r = try CLI.run(["logits", "--model", CLI.fixture("mixtral"), "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors"),
                             "--report", t.path("report.json")])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: t.path("report.json")))) as! [String: Any]
        let stages = (obj["stages"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(stages == ["load", "forward", "write"])
        #expect((obj["peak_rss_anon_mib"] as! Double) > 0 && (obj["wall_seconds"] as! Double) > 0)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: t.path("o.safetensors"))[.size] as? Int)
        #expect(size > 200 * 96 * 4)
        let bound = Double((size + 4095) / 4096 * 4096 + 4 * 4096)
        let written = (obj["written_mib"] as! Double) * 1_048_576
        let stageWritten = ((obj["stages"] as! [[String: Any]]).last!["written_mib"] as! Double) * 1_048_576
        #expect(stageWritten >= Double(size) && stageWritten <= bound, "write stage: \(stageWritten) bytes for a \(size)-byte file")
        #expect(written >= stageWritten && written <= bound, "process: \(written) bytes for a \(size)-byte file")
    }

    /// Calibration and training print their time, memory and disk before the work, and the report keeps the
    /// estimates beside the measured stages.
    @Test func estimatesArePrintedAndReported() throws {
        let t = TempDir()
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        let r = try CLI.run(["calibrate", "--model", model, "--calib-dir", CLI.shared.appendingPathComponent("data/calib").path, "--samples", "4", "--seq-len", "32",
                             "--output", t.path("cal"), "--report", t.path("report.json")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("time ≈") && r.stderr.contains("memory ≈") && r.stderr.contains("on disk"), "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: t.path("report.json")))) as! [String: Any]
        let estimates = obj["estimates"] as! [[String: Any]]
        let cal = try #require(estimates.first { $0["name"] as? String == "calibrate" })
        #expect((cal["seconds"] as! Double).isFinite && (cal["seconds"] as! Double) > 0)
        #expect((cal["disk_mib"] as! Double) > 0 && (cal["memory_mib"] as! Double) > 0)
        let h = try CLI.run(["heal", "--model", model, "--data", CLI.shared.appendingPathComponent("data/calib").path, "--steps", "2", "--batch", "1", "--seq-len", "16",
                             "--output", t.path("heal")])
        #expect(h.status == 0 && h.stderr.contains("train: 2 steps of 16 tokens; time ≈"), "\(h.stderr)")
        #expect(h.stderr.contains("heal: validation loss before") && h.stderr.contains("heal: validation loss ") && h.stderr.contains(" → "), "\(h.stderr)")
    }

    /// DeepSeek-V3 trains (latent attention, sigmoid routing with correction bias, shared experts, a dense first
    /// layer): LoRA goes on its own projections and the PEFT adapter names them by their module paths, with the
    /// MLP projections as target parameters (CI loads it in HF PEFT and compares logits).
    @Test func healsDeepSeekLatentAttention() throws {
        let t = TempDir()
        let fixture = URL(fileURLWithPath: CLI.fixture("deepseek_v3")).appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture)) as! [String: Any]
        config["vocab_size"] = 4096   // the reference tokenizer's
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: t.path("config.json")))
        let reference = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        let s = try CLI.run(["synth", "--config", t.path("config.json"), "--output", t.path("ds3"), "--dtype", "f32", "--tokenizer-from", reference, "--quiet"])
        #expect(s.status == 0, "\(s.stderr)")
        let h = try CLI.run(["heal", "--model", t.path("ds3"), "--data", CLI.shared.appendingPathComponent("data/calib").path, "--steps", "2",
                             "--batch", "1", "--seq-len", "16", "--lora-rank", "2", "--output", t.path("healed"), "--quiet"])
        #expect(h.status == 0, "\(h.stderr)")
        let peft = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: t.path("healed/adapter_config.json")))) as! [String: Any]
        let modules = Set(peft["target_modules"] as! [String]), params = Set(peft["target_parameters"] as! [String])
        #expect(modules == ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"], "\(modules)")
        #expect(params.isSuperset(of: ["mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight", "mlp.down_proj.weight",
                                       "mlp.shared_experts.down_proj.weight"]), "\(params)")
        let adapter = try SafeTensorsFile(path: t.path("healed/adapter_model.safetensors"))
        let names = Set(adapter.tensors.map(\.name))
        #expect(names.contains("base_model.model.model.layers.0.self_attn.kv_a_proj_with_mqa.lora_A.weight"))
        #expect(names.contains("base_model.model.model.layers.1.mlp.shared_experts.up_proj.lora_B.weight"))
    }

    /// MoE-I² settings the search cannot run with are refused before anything is read or written.
    @Test func searchSettingsAreRefusedBeforeAnyWork() throws {
        let t = TempDir()
        for bad in [["--population", "0"], ["--block-size", "0"], ["--candidates", "0"], ["--fitness-tokens", "0"], ["--field-sequences", "-1"]] {
            let r = try CLI.run(["prune", "--model", CLI.fixture("qwen2_moe"), "--method", "moei2", "--calib-dir", t.path("none"), "--ratio", "0.25",
                                 "--output", t.path("o")] + bad)
            #expect(r.status != 0 && r.stderr.contains(bad[0]), "\(bad) \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: t.path("o")))
        }
    }

    /// The first hour of a new user (issue 26): each typo or bad value is one line `error: <problem> (<option>)`, exit
    /// 64, naming what was typed and the closest valid name; negative numbers are values; nothing-to-do budgets are refused.
    @Test func usageErrorsAreOneLineNamingTheOption() throws {
        let t = TempDir()
        let model = CLI.fixture("mixtral")
        let cases: [(args: [String], status: Int32, expected: [String])] = [
            (["prune", "--model", model, "--method", "frequency", "--calib-dir", t.path("none"), "--output", t.path("o"), "--ratio", "-0.1"], 64,
             ["must be a number in (0, 1), got -0.1", "(--ratio)"]),
            (["prune", "--model", model, "--method", "moeits", "--kep", "6", "--output", t.path("o")], 64, ["unknown option", "'--keep'", "(--kep)"]),
            (["prune", "--modle", model, "--method", "moeits", "--keep", "6", "--output", t.path("o")], 64, ["unknown option", "'--model'", "(--modle)"]),
            (["inspekt", model], 64, ["unknown command", "'inspect'", "(inspekt)"]),
            (["eval", "perplx", "--model", model], 64, ["unknown command", "'perplexity'", "(perplx)"]),
            (["prune", "--model", model, "--method", "moeits", "--output", t.path("o"), "--ratio", "0"], 64, ["got 0", "(--ratio)"]),
            (["prune", "--model", model, "--method", "moeits", "--output", t.path("o"), "--keep", "4"], 1, ["--keep 4 removes no expert", "nothing to prune"]),
            (["prune", "--model", model, "--method", "bogus", "--output", t.path("o")], 64, ["invalid value 'bogus'", "moeits", "(--method)"]),
            (["prune", "--model", model, "--output", t.path("o")], 64, ["missing required option (--method)"]),
            (["inspect", model, "extra"], 64, ["unexpected argument (extra)"]),
            (["generate", "--model", model, "--prompt", "x", "--temperature", "-1"], 64, ["got -1", "(--temperature)"]),
            (["export", "--model", model, "--dense", "--gguf-type", "q8_0", "--output", t.path("o")], 64, ["only --gguf", "(--gguf-type)"]),
            (["prune", "--model", model, "--method", "moeits", "--keep", "6", "--nmi-weights", "1,x,1", "--output", t.path("o")], 64, ["(--nmi-weights)"]),
        ]
        for c in cases {
            let r = try CLI.run(c.args)
            #expect(r.status == c.status, "\(c.args) \(r.status) \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: ") && r.stderr.split(separator: "\n").count == 1, "\(c.args) \(r.stderr)")
            for e in c.expected { #expect(r.stderr.contains(e), "\(c.args): \(e) not in \(r.stderr)") }
            #expect(!FileManager.default.fileExists(atPath: t.path("o")))
        }
        // A negative number is the option's value: MoEITS's τ may be negative, and this one reaches the method.
        let neg = try CLI.run(["prune", "--model", model, "--method", "moeits", "--tau", "-0.5", "--output", t.path("neg"), "--quiet"])
        #expect(neg.status == 1 && neg.stderr.contains("τ = -0.5 leaves"), "\(neg.stderr)")
        // --help is not an error.
        let help = try CLI.run(["prune", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--nmi-weights"), "\(help.stderr)")
    }

    /// Issue 14's bad flags (NaN, out of range, zero counts) are refused by the recipes' rule set before any work.
    @Test func badNumbersAreRefusedBeforeAnyWork() throws {
        let t = TempDir()
        let model = CLI.fixture("qwen2_moe")
        let cases: [[String]] = [
            ["prune", "--model", model, "--method", "moeits", "--output", t.path("o"), "--tau", "nan"],
            ["prune", "--model", model, "--method", "reap", "--calib-dir", t.path("none"), "--output", t.path("o"), "--ratio", "1.5"],
            ["decompose", "--model", model, "--output", t.path("o"), "--ratio", "0"],
            ["decompose", "--model", model, "--output", t.path("o"), "--ratio", "0.5", "--alpha", "inf"],
            ["heal", "--model", model, "--data", t.path("none"), "--output", t.path("o"), "--lora-dropout", "1.5"],
            ["heal", "--model", model, "--data", t.path("none"), "--output", t.path("o"), "--warmup-ratio", "2"],
            ["heal", "--model", model, "--data", t.path("none"), "--output", t.path("o"), "--lr", "0"],
            ["compress-experts", "--model", model, "--data", t.path("none"), "--output", t.path("o"), "--main-experts", "0"],
            ["calibrate", "--model", model, "--calib-dir", t.path("none"), "--output", t.path("o"), "--samples", "0"],
            ["eval", "tasks", "--model", model, "--tasks", t.path("none"), "--batch", "0"],
            ["generate", "--model", model, "--prompt", "x", "--top-p", "nan"],
        ]
        for args in cases {
            let flag = args.last(where: { $0.hasPrefix("--") })!
            let r = try CLI.run(args)
            // One line, the problem then the flag, and the usage-error exit code.
            #expect(r.status == 64 && r.stderr.hasSuffix("(\(flag))\n") && r.stderr.contains("must be") && r.stderr.split(separator: "\n").count == 1,
                    "\(args) \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: t.path("o")))
        }
    }

    /// A weight holding NaN: `inspect --verify` and `--check-weights` name the tensor, and a command computing
    /// with it refuses its NaN logits instead of writing them.
    @Test func nonFiniteWeightsAreNamedAndNeverComputedOn() throws {
        let t = TempDir()
        let src = URL(fileURLWithPath: CLI.fixture("mixtral"))
        let dir = t.url.appendingPathComponent("nan")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: src.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        var bytes = try Data(contentsOf: src.appendingPathComponent("model.safetensors"))
        let n = bytes.prefix(8).withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self)) }
        let header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + n))) as! [String: Any]
        let name = "model.layers.0.self_attn.q_proj.weight"
        let entry = header[name] as! [String: Any]
        #expect(entry["dtype"] as? String == "F32")
        let at = 8 + n + (entry["data_offsets"] as! [Int])[0] + 4 * 5
        bytes.replaceSubrange(at..<(at + 4), with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { Data($0) })
        try bytes.write(to: dir.appendingPathComponent("model.safetensors"))

        let verify = try CLI.run(["inspect", dir.path, "--verify"])
        #expect(verify.status != 0 && verify.stderr.contains(name) && verify.stderr.contains("element 5"), "\(verify.stderr)")
        let clean = try CLI.run(["inspect", src.path, "--verify"])
        #expect(clean.status == 0 && clean.stderr.contains("finite"), "\(clean.stderr)")
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let logits = try CLI.run(["logits", "--model", dir.path, "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors")])
        // Computing on it anyway: the non-finite result is an error that names the tensor, in every command.
        #expect(logits.status == 1 && logits.stderr.contains(name) && logits.stderr.contains("element 5"), "\(logits.stderr)")
        #expect(!FileManager.default.fileExists(atPath: t.path("o.safetensors")))
        try #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2}, "merges": []}}"#.write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        try String(repeating: "abc", count: 100).write(toFile: t.path("t.txt"), atomically: true, encoding: .utf8)
        for args in [["eval", "perplexity", "--model", dir.path, "--text-file", t.path("t.txt")],
                     ["eval", "perplexity", "--model", dir.path, "--text-file", t.path("t.txt"), "--json"],
                     ["generate", "--model", dir.path, "--prompt", "abc", "--max-tokens", "2"]] {
            let r = try CLI.run(args)
            #expect(r.status == 1 && r.stderr.contains(name) && !r.stdout.lowercased().contains("nan"), "\(args): \(r.stderr)")
        }
        let checked = try CLI.run(["logits", "--model", dir.path, "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors"), "--check-weights"])
        #expect(checked.status != 0 && checked.stderr.contains(name), "\(checked.stderr)")
    }

    /// Seeded fuzzing of numeric flags (the fuzz target's CLI part): every value ends in a clean error or a
    /// clean start; never a signal, a hang or a usage error without the flag's name.
    @Test func numericFlagsFuzz() throws {
        let t = TempDir()
        let none = t.path("missing")
        let commands: [(args: [String], flags: [String])] = [
            (["prune", "--model", none, "--method", "moei2", "--calib", none, "--output", t.path("o")],
             ["--ratio", "--population", "--generations", "--candidates", "--block-size", "--fitness-tokens", "--field-sequences"]),
            (["prune", "--model", none, "--method", "moeits", "--output", t.path("o")], ["--tau"]),
            (["decompose", "--model", none, "--output", t.path("o"), "--ratio", "0.5"], ["--alpha", "--importance-tokens"]),
            (["heal", "--model", none, "--data", none, "--output", t.path("o")],
             ["--steps", "--lr", "--batch", "--grad-accum", "--seq-len", "--warmup-ratio", "--weight-decay", "--max-grad-norm", "--lora-rank", "--lora-alpha", "--lora-dropout"]),
            (["calibrate", "--model", none, "--calib-dir", none, "--output", t.path("o")], ["--samples", "--seq-len"]),
            (["generate", "--model", none, "--prompt", "x"], ["--max-tokens", "--temperature", "--top-p"]),
            (["eval", "tasks", "--model", none, "--tasks", none], ["--limit", "--batch"]),
        ]
        let values = ["nan", "-nan", "inf", "-inf", "0", "-0", "1", "0.5", "1.5", "2", "1e300", "-1e300", "99999999999999999999", "x", "", "0x10", "1e-320"]
        var rng = UInt64(2026)
        func next(_ n: Int) -> Int { rng = rng &* 6364136223846793005 &+ 1442695040888963407; return Int((rng >> 33) % UInt64(n)) }
        for _ in 0..<40 {
            let (args, flags) = commands[next(commands.count)]
            let flag = flags[next(flags.count)], value = values[next(values.count)]
            let r = try CLI.run(args + ["\(flag)=\(value)"])
            #expect(r.status == 1 || r.status == 64, "\(args[0]) \(flag)=\(value): status \(r.status) \(r.stderr)")
            #expect(!r.stderr.isEmpty && r.stderr.split(separator: "\n").count <= 3 || r.stderr.contains("Usage"), "\(flag)=\(value): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: t.path("o")))
        }
    }

    /// A tensor in the files that no part of the model reads is reported (as HF warns), not silently ignored; inside a
    /// decoder layer the model runs (weights the config does not describe, such as a shared expert it leaves out) it is
    /// refused by every command, `inspect` included.
    @Test func unusedTensorsAreReported() throws {
        let t = TempDir()
        let src = URL(fileURLWithPath: CLI.fixture("mixtral"))
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        let ck = try Checkpoint(directory: src)
        for (extra, refused) in [("model.layers.0.mystery.weight", true), ("model.layers.1.mlp.shared_expert.up_proj.weight", true),
                                 ("model.layers.7.mystery.weight", false), ("model.mtp.weight", false)] {
            let dir = t.url.appendingPathComponent("m-\(extra)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: src.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
            try SafeTensorsWriter.write(try ck.names.map { try ck.rawEntry($0) } + [.init(extra, raw: Data(count: 16), dtype: .f32, shape: [4])],
                                        to: dir.appendingPathComponent("model.safetensors"))
            let r = try CLI.run(["logits", "--model", dir.path, "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors")])
            let i = try CLI.run(["inspect", dir.path])
            if refused {
                #expect(r.status == 1 && r.stderr.contains(extra) && r.stderr.contains("config.json describes no such part"), "\(r.stderr)")
                #expect(i.status == 1 && i.stderr.contains(extra), "\(i.stderr)")
            } else {
                #expect(r.status == 0 && r.stderr.contains("not used") && r.stderr.contains(extra), "\(r.stderr)")
                #expect(i.status == 0, "\(i.stderr)")
            }
            try? FileManager.default.removeItem(atPath: t.path("o.safetensors"))
        }
        let clean = try CLI.run(["logits", "--model", src.path, "--ids-file", t.path("ids.json"), "--output", t.path("p.safetensors")])
        #expect(clean.status == 0 && !clean.stderr.contains("not used"), "\(clean.stderr)")
    }

    /// Single-file outputs are not replaced without --overwrite (and the refusal comes before any work).
    @Test func singleFileOutputsRefuseToOverwrite() throws {
        let t = TempDir()
        try "[1, 2, 3]".write(toFile: t.path("ids.json"), atomically: true, encoding: .utf8)
        try "keep me".write(toFile: t.path("o.safetensors"), atomically: true, encoding: .utf8)
        let args = ["logits", "--model", CLI.fixture("mixtral"), "--ids-file", t.path("ids.json"), "--output", t.path("o.safetensors")]
        let r = try CLI.run(args)
        #expect(r.status != 0 && r.stderr.contains("already exists"), "\(r.stderr)")
        #expect(try String(contentsOfFile: t.path("o.safetensors"), encoding: .utf8) == "keep me")
        let ok = try CLI.run(args + ["--overwrite"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let missing = try CLI.run(["logits", "--model", CLI.fixture("mixtral"), "--ids-file", t.path("ids.json"), "--output", t.path("no/such/o.safetensors")])
        #expect(missing.status != 0 && missing.stderr.contains("folder does not exist"), "\(missing.stderr)")
        try "keep me".write(toFile: t.path("s.jsonl"), atomically: true, encoding: .utf8)
        let tasks = CLI.shared.appendingPathComponent("data/tasks/dev.jsonl").path
        let e = try CLI.run(["eval", "tasks", "--model", CLI.fixture("mixtral"), "--tasks", tasks, "--limit", "2", "--samples", t.path("s.jsonl")])
        #expect(e.status != 0 && e.stderr.contains("already exists"), "\(e.stderr)")
        #expect(try String(contentsOfFile: t.path("s.jsonl"), encoding: .utf8) == "keep me")
    }

    @Test func unknownInstructionSetIsRefused() throws {
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = ["bench", "--model", CLI.fixture("mixtral"), "--tokens", "4", "--decode", "1", "--rounds", "1"]
        p.environment = ["MOEPRESS_ISA": "avx9000"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0 && e.contains("MOEPRESS_ISA"), "\(e)")
    }

    @Test func benchJSON() throws {
        let r = try CLI.run(["bench", "--model", CLI.fixture("deepseek_v2"), "--tokens", "16", "--decode", "4", "--rounds", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        for k in ["prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms", "peak_rss_mib", "peak_rss_anon_mib", "active_weight_gb",
                  "memory_read_gb_per_second", "decode_bound_tokens_per_second"] {
            #expect((obj[k] as? Double ?? 0) > 0, "\(k) in \(r.stdout)")
        }
        // Median, min and max of each figure over the rounds.
        for k in ["prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms"] {
            let lo = obj[k + "_min"] as? Double ?? .nan, m = obj[k] as? Double ?? .nan, hi = obj[k + "_max"] as? Double ?? .nan
            #expect(lo <= m && m <= hi, "\(k) in \(r.stdout)")
        }
        #expect(obj["rounds"] as? Int == 2)
        #expect((obj["machine"] as? String ?? "").hasPrefix("machine: "), "\(r.stdout)")
    }

    @Test func benchRefusesZeroRounds() throws {
        let r = try CLI.run(["bench", "--model", CLI.fixture("mixtral"), "--rounds", "0"])
        #expect(r.status != 0 && r.stderr.contains("must be at least 1") && r.stderr.contains("(--rounds)"), "\(r.stderr)")
        let m = try CLI.run(["bench", "--machine-only", "--threads", "1"])
        #expect(m.status == 0 && m.stdout.hasPrefix("machine: ") && m.stdout.contains("read bandwidth"), "\(m.stdout)\(m.stderr)")
    }
}

@Suite struct TokenizeCLITests {
    @Test func encodeAndDecode() throws {
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        let r = try CLI.run(["tokenize", "--model", model, "--text", "In the beginning"])
        #expect(r.status == 0, "\(r.stderr)")
        let ids = try JSONDecoder().decode([Int].self, from: Data(r.stdout.utf8))
        let special = try CLI.run(["tokenize", "--model", model, "--text", "In the beginning", "--special"])
        #expect(try JSONDecoder().decode([Int].self, from: Data(special.stdout.utf8)) == [1] + ids)
        let back = try CLI.run(["tokenize", "--model", model, "--decode", "--text", r.stdout])
        #expect(back.status == 0 && back.stdout == "In the beginning")
    }

    @Test func malformedTokenizerIsOneLineError() throws {
        let t = TempDir()
        try #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a q"]}}"#.write(toFile: t.path("tokenizer.json"), atomically: true, encoding: .utf8)
        let r = try CLI.run(["tokenize", "--tokenizer", t.path("tokenizer.json"), "--text", "a"])
        #expect(r.status != 0)
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("tokenizer.json") && r.stderr.contains("unknown token \"q\""), "\(r.stderr)")
        let r2 = try CLI.run(["tokenize", "--tokenizer", t.path("tokenizer.json")])
        #expect(r2.status != 0 && r2.stderr.contains("--text"))
    }
}

@Suite struct EvalCLITests {
    @Test func perplexityJSONShape() throws {
        let model = CLI.shared.appendingPathComponent("models/qwen-moe-ref").path
        let r = try CLI.run(["eval", "perplexity", "--model", model, "--text-file", CLI.shared.appendingPathComponent("data/dev/handbook.txt").path, "--json", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let files = obj["files"] as! [String: [String: Any]]
        #expect(files["handbook.txt"]?["tokens"] as? Int == obj["tokens"] as? Int)
        #expect((obj["perplexity"] as! Double) > 1)
    }

    /// --validation-of scores exactly the validation slice of each .txt file (the lines after the cut) and
    /// refuses to be combined with --text-file.
    @Test func perplexityOnTheValidationSlice() throws {
        let t = TempDir()
        let model = CLI.shared.appendingPathComponent("models/mixtral-ref").path
        try FileManager.default.createDirectory(atPath: t.path("text"), withIntermediateDirectories: true)
        let text = (0..<100).map { "Line \($0) of a small text, to be split in two.\n" }.joined()
        try text.write(toFile: t.path("text/a.txt"), atomically: true, encoding: .utf8)
        let tail = text.split(separator: "\n").suffix(10).map { $0 + "\n" }.joined()   // equal lines: the cut is after line 90
        try tail.write(toFile: t.path("tail.txt"), atomically: true, encoding: .utf8)
        let v = try CLI.run(["eval", "perplexity", "--model", model, "--validation-of", t.path("text"), "--json", "--quiet"])
        let f = try CLI.run(["eval", "perplexity", "--model", model, "--text-file", t.path("tail.txt"), "--json", "--quiet"])
        #expect(v.status == 0 && f.status == 0, "\(v.stderr) \(f.stderr)")
        let a = try JSONSerialization.jsonObject(with: Data(v.stdout.utf8)) as! [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(f.stdout.utf8)) as! [String: Any]
        #expect(a["tokens"] as? Int == b["tokens"] as? Int && a["perplexity"] as? Double == b["perplexity"] as? Double)
        let both = try CLI.run(["eval", "perplexity", "--model", model, "--validation-of", t.path("text"), "--text-file", t.path("tail.txt")])
        #expect(both.status != 0 && both.stderr.contains("not both"), "\(both.stderr)")
    }

    @Test func badInputsExitNonZero() throws {
        let t = TempDir()
        let model = CLI.fixture("mixtral")
        try "".write(toFile: t.path("empty.txt"), atomically: true, encoding: .utf8)
        try "{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}\n{oops".write(toFile: t.path("bad.jsonl"), atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["eval", "perplexity", "--model", model, "--text-file", t.path("missing.txt")], "no such file"),
            (["eval", "perplexity", "--model", model, "--text-file", t.path("empty.txt")], "empty"),
            (["eval", "tasks", "--model", model, "--tasks", t.path("bad.jsonl")], "bad.jsonl:2"),
            (["eval", "tasks", "--model", model, "--tasks", t.path("missing.jsonl")], "no such file"),
            (["generate", "--model", model, "--prompt", "x", "--top-p", "0"], "--top-p"),
        ]
        for (args, needle) in cases {
            let r = try CLI.run(args)
            #expect(r.status != 0, "\(args)")
            #expect(r.stderr.contains(needle), "\(args): \(r.stderr)")
        }
    }
}
