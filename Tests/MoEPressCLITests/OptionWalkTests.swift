import Foundation
import Testing

/// Issue 26 §4, every option honoured or refused: one walk over every option of every command, read from the
/// built binary's own definitions (`--experimental-dump-help`, ArgumentParser's description of each command),
/// so a new option cannot escape: the walk fails for an option without a probe, and for a probe naming an
/// option that does not exist. Each probe shows that its option changes what runs (stdout, the output files'
/// bytes, the JSON the command writes, or stderr where that is the option's purpose), or that the option is
/// refused, with one line naming it, in a combination where it does not apply. Runs use tiny models (the test
/// fixtures, and a fixture-sized model with the reference tokenizer made by `synth` where text is needed).
@Suite(.serialized) struct OptionWalkTests {
    /// A finished run: its result and its own folder (`$D` in its arguments).
    struct Outcome {
        let result: CLI.Result
        let dir: URL
    }

    /// What a probe looks at in a run.
    typealias Observe = @Sendable (Outcome) -> String

    enum Check {
        /// The run with the option differs from the run without it (the command's base run unless `without`).
        case differs(Observe)
        /// The run with the option shows `value`, which the run without it does not; probes of this kind
        /// share one run per command (their options together), as each looks at its own part of the outputs.
        case records(Observe, String)
        /// The run without the option fails; the one with it succeeds.
        case enables
        /// The run with the option writes fewer lines to stderr.
        case quieter
        /// Exit 64 with one line naming the option and containing this text.
        case refused(String)
    }

    struct Probe {
        let command: String
        let option: String
        let variant: String
        /// Arguments added to the variant's base (replacing the base's own values of the options they name).
        let with: [String]
        /// The run to compare with: nil for the variant's base run, else these arguments added to the base.
        let without: [String]?
        /// Options of the base left out of the run with the option (and of the run without it, for `enables`).
        let drop: [String]
        /// A path (with `$D`) made before each run: an output that already exists (a file when it has an extension).
        let existing: String?
        let check: Check
    }

    /// A probe of `with`'s first option (or `option`) of `command`.
    static func p(_ command: String, _ with: [String], _ check: Check, option: String? = nil, variant: String = "",
                  without: [String]? = nil, drop: [String] = [], existing: String? = nil) -> Probe {
        Probe(command: command, option: option ?? with.first { $0.hasPrefix("--") }!, variant: variant, with: with, without: without,
              drop: drop, existing: existing, check: check)
    }

    // MARK: what probes look at

    static func digest(_ d: Data) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in d { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }
    static let stdout: Observe = { $0.result.stdout }
    /// The bytes of a file of the run's folder.
    static func file(_ path: String) -> Observe {
        { o in FileManager.default.contents(atPath: o.dir.appendingPathComponent(path).path).map(digest) ?? "missing" }
    }
    /// Every file under a folder of the run's folder (names and bytes), but `except`.
    static func tree(_ path: String, except: Set<String> = []) -> Observe {
        { o in
            let root = o.dir.appendingPathComponent(path)
            guard let e = FileManager.default.enumerator(atPath: root.path) else { return "missing" }
            var lines: [String] = []
            while let f = e.nextObject() as? String {
                guard !except.contains((f as NSString).lastPathComponent), let d = FileManager.default.contents(atPath: root.path + "/" + f) else { continue }
                lines.append("\(f) \(digest(d))")
            }
            return lines.sorted().joined(separator: "\n")
        }
    }
    /// The names in the run's folder.
    static let listing: Observe = { o in ((try? FileManager.default.contentsOfDirectory(atPath: o.dir.path)) ?? []).sorted().joined(separator: " ") }
    /// A value in a JSON document, by a dotted key path, written as JSON (numbers as %g).
    static func value(_ object: Any?, _ keyPath: String) -> String {
        var v: Any? = object
        for k in keyPath.split(separator: ".") { v = (v as? [String: Any])?[String(k)] }
        guard let v else { return "missing" }
        guard let d = try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed]) else { return "\(v)" }
        let text = String(decoding: d, as: UTF8.self)
        return Double(text).map { String(format: "%g", $0) } ?? text
    }
    static func json(_ path: String, _ keyPath: String) -> Observe {
        { o in
            guard let d = FileManager.default.contents(atPath: o.dir.appendingPathComponent(path).path) else { return "missing" }
            return value(try? JSONSerialization.jsonObject(with: d), keyPath)
        }
    }
    static func stdoutJSON(_ keyPath: String) -> Observe { { o in value(try? JSONSerialization.jsonObject(with: Data(o.result.stdout.utf8)), keyPath) } }
    static func report(_ keyPath: String) -> Observe { json("report.json", keyPath) }
    /// Whether stdout or stderr contains `text`.
    static func says(_ text: String) -> Observe { { o in (o.result.stdout + o.result.stderr).contains(text) ? "yes" : "no" } }
    static func exists(_ path: String) -> Observe { { o in FileManager.default.fileExists(atPath: o.dir.appendingPathComponent(path).path) ? "yes" : "no" } }
    static let isJSON: Observe = { o in (try? JSONSerialization.jsonObject(with: Data(o.result.stdout.utf8))) != nil ? "yes" : "no" }
    /// A part of plan.json's calibration record "NxL seed S data H".
    static func calibration(_ part: Int) -> Observe {
        { o in
            let s = json("o/plan.json", "parameters.calibration")(o).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            let words = s.replacingOccurrences(of: "x", with: " ").split(separator: " ").map(String.init)
            return words.count > 3 ? words[[0, 1, 3][part]] : "missing"
        }
    }

    // MARK: the table

    /// Each command's base run (arguments after the command path), by command and variant (`command/variant`).
    static let bases: [String: [String]] = [
        "inspect": ["$F/mixtral"],
        "tokenize": ["--model", "$T/tiny", "--text", "Hello world"],
        "logits": ["--model", "$F/mixtral", "--ids-file", "$T/ids.json", "--output", "$D/o.safetensors"],
        "eval perplexity": ["--model", "$T/tiny", "--text-file", "$T/text/a.txt", "--seq-len", "16"],
        "eval tasks": ["--model", "$T/tiny", "--tasks", "$T/tasks.jsonl", "--samples", "$D/s.jsonl"],
        "eval instructions": ["--model", "$T/tiny", "--data", "$T/instructions.jsonl", "--samples", "$D/s.jsonl"],
        "generate": ["--model", "$T/tiny", "--prompt", "It is a truth", "--max-tokens", "4"],
        "calibrate": ["--model", "$T/tiny", "--calib-dir", "$T/text", "--samples", "2", "--seq-len", "16", "--output", "$D/o"],
        "prune": ["--model", "$T/tiny", "--method", "moeits", "--keep", "3", "--output", "$D/o"],
        "prune/moei2": ["--model", "$T/tiny", "--method", "moei2", "--calib", "$T/cal", "--ratio", "0.25", "--population", "2", "--generations", "1",
                        "--field-sequences", "1", "--output", "$D/o"],
        "prune/calibrated": ["--model", "$T/tiny", "--method", "frequency", "--calib-dir", "$T/text", "--samples", "2", "--seq-len", "16", "--ratio", "0.25",
                             "--output", "$D/o"],
        "decompose": ["--model", "$T/tiny", "--method", "svd", "--rank-alloc", "uniform", "--rank", "4", "--output", "$D/o"],
        "decompose/svdllm": ["--model", "$T/tiny", "--method", "svdllm", "--calib", "$T/cal", "--rank-alloc", "uniform", "--rank", "4", "--output", "$D/o"],
        "decompose/calibrated": ["--model", "$T/tiny", "--method", "svdllm", "--calib-dir", "$T/text", "--samples", "2", "--seq-len", "16",
                                 "--rank-alloc", "uniform", "--rank", "4", "--output", "$D/o"],
        "compress": ["--model", "$T/tiny", "--prune-ratio", "0.25", "--keep-params", "0.5", "--calib-dir", "$T/text", "--samples", "2", "--seq-len", "16",
                     "--population", "2", "--generations", "1", "--field-sequences", "1", "--output", "$D/o"],
        "compress/heal": ["--model", "$T/tiny", "--prune-ratio", "0.25", "--keep-params", "0.5", "--calib-dir", "$T/text", "--samples", "2", "--seq-len", "16",
                          "--population", "2", "--generations", "1", "--field-sequences", "1", "--heal-steps", "2", "--heal-batch", "1", "--heal-seq-len", "8",
                          "--heal-rank", "2", "--output", "$D/o"],
        "heal": ["--model", "$T/tiny", "--data", "$T/text", "--steps", "2", "--batch", "1", "--seq-len", "8", "--lora-rank", "2", "--output", "$D/o"],
        "compress-experts": ["--model", "$T/tiny", "--main-experts", "1", "--data", "$T/text", "--steps", "1", "--batch", "1", "--seq-len", "8", "--output", "$D/o"],
        "run": ["$T/recipe.yaml", "--output", "$D/run"],
        "export": ["--model", "$T/lowrank", "--dense", "--output", "$D/o"],
        "export/uniform": ["--model", "$T/pruned", "--uniform", "--output", "$D/o"],
        "export/gguf": ["--model", "$T/tiny", "--gguf", "--output", "$D/o.gguf"],
        "bench": ["--model", "$F/mixtral", "--tokens", "4", "--decode", "2", "--rounds", "1", "--no-bandwidth", "--json"],
        "bench/table": ["--model", "$F/mixtral", "--tokens", "4", "--decode", "2", "--rounds", "1", "--no-bandwidth"],
        "bench/bandwidth": ["--model", "$F/mixtral", "--tokens", "4", "--decode", "2", "--rounds", "1", "--json"],
        "bench-tokenizer": ["--tokenizer", "$T/tiny/tokenizer.json", "--text-dir", "$T/text", "--rounds", "1", "--json"],
        "bench-tokenizer/table": ["--tokenizer", "$T/tiny/tokenizer.json", "--text-dir", "$T/text", "--rounds", "1"],
        "synth": ["--config", "$T/config.json", "--output", "$D/o", "--dtype", "f32"],
        "synth/gpt-oss": ["--config", "$F/gpt_oss/config.json", "--output", "$D/o", "--dtype", "f32"],
    ]

    /// One line per option: the command, the arguments that add it (with the value used), and what shows it is
    /// honoured or refused. `$T`: the walk's shared folder (models and data made once), `$D`: the run's own
    /// folder, `$B`: the folder of the variant's base run, `$F`: the test fixtures, `$M`/`$Q`: the shared
    /// Mixtral- and Qwen-style reference models.
    static func table() -> [Probe] {
        let training: [(String, String, String)] = [   // option, value, training_log.json's settings key
            ("--steps", "3", "steps"), ("--lr", "0.001", "learningRate"), ("--batch", "2", "batchSize"), ("--grad-accum", "2", "gradientAccumulation"),
            ("--seq-len", "16", "seqLen"), ("--warmup-ratio", "0.5", "warmupRatio"), ("--weight-decay", "0.01", "weightDecay"),
            ("--max-grad-norm", "0.5", "maxGradNorm"), ("--seed", "3", "seed"), ("--neftune-alpha", "5", "neftuneAlpha"),
            ("--checkpoint-every", "1", "checkpointEvery"),
        ]
        var t: [Probe] = [
            p("inspect", ["--json"], .differs(stdout)),
            p("inspect", ["--verify"], .records(says("tensors are finite"), "yes")),

            p("tokenize", ["--model", "$Q"], .differs(stdout)),
            p("tokenize", ["--tokenizer", "$Q/tokenizer.json"], .differs(stdout), drop: ["--model"]),
            p("tokenize", ["--text", "Goodbye"], .differs(stdout)),
            p("tokenize", ["--text-file", "$T/text/a.txt"], .differs(stdout), drop: ["--text"]),
            p("tokenize", ["--special"], .differs(stdout)),
            p("tokenize", ["--decode", "--text", "[1, 300, 301]"], .differs(stdout)),
            p("tokenize", ["--skip-special-tokens", "--decode", "--text", "[1, 300, 301]"], .differs(stdout), without: ["--decode", "--text", "[1, 300, 301]"]),
            p("tokenize", ["--skip-special-tokens"], .refused("only --decode")),
            p("tokenize", ["--special", "--decode", "--text", "[1, 300, 301]"], .refused("only encoding")),

            p("logits", ["--model", "$F/olmoe"], .differs(file("o.safetensors"))),
            p("logits", ["--ids-file", "$T/ids2.json"], .differs(file("o.safetensors"))),
            p("logits", ["--output", "$D/p.safetensors"], .differs(listing)),
            p("logits", ["--reference", "$B/o.safetensors"], .differs(stdout)),
            p("logits", ["--tolerance", "1000", "--reference", "$T/ref.safetensors"], .enables, without: ["--reference", "$T/ref.safetensors"]),
            p("logits", ["--tolerance", "1000"], .refused("only --reference")),

            p("eval perplexity", ["--model", "$T/tiny2"], .differs(stdout)),
            p("eval perplexity", ["--text-file", "$T/text2/b.txt"], .differs(stdout)),
            p("eval perplexity", ["--seq-len", "8"], .differs(stdout)),
            p("eval perplexity", ["--validation-of", "$T/text"], .differs(stdout), drop: ["--text-file"]),
            p("eval perplexity", ["--json"], .records(isJSON, "yes")),

            p("eval tasks", ["--model", "$T/tiny2"], .differs(file("s.jsonl"))),
            p("eval tasks", ["--tasks", "$T/tasks2.jsonl"], .differs(file("s.jsonl"))),
            p("eval tasks", ["--limit", "1"], .differs(file("s.jsonl"))),
            p("eval tasks", ["--batch", "1", "--report", "$D/report.json"], .records(report("counts.task_batches"), "3")),
            p("eval tasks", ["--samples", "$D/t.jsonl"], .differs(listing)),
            p("eval tasks", ["--add-special-tokens"], .differs(file("s.jsonl"))),
            p("eval tasks", ["--json"], .records(isJSON, "yes")),
            p("eval tasks", ["--overwrite"], .refused("only --samples"), drop: ["--samples"]),

            p("eval instructions", ["--model", "$T/tiny2"], .differs(file("s.jsonl"))),
            p("eval instructions", ["--data", "$T/instructions2.jsonl"], .differs(file("s.jsonl"))),
            p("eval instructions", ["--limit", "1"], .differs(file("s.jsonl"))),
            p("eval instructions", ["--samples", "$D/t.jsonl"], .differs(listing)),
            p("eval instructions", ["--json"], .records(isJSON, "yes")),
            p("eval instructions", ["--overwrite"], .refused("only --samples"), drop: ["--samples"]),

            p("generate", ["--model", "$T/tiny2"], .differs(stdout)),
            p("generate", ["--prompt", "In the beginning"], .differs(stdout)),
            p("generate", ["--max-tokens", "2"], .differs(stdout)),
            p("generate", ["--temperature", "1.5"], .differs(stdout)),
            p("generate", ["--top-p", "0.05", "--temperature", "1.5"], .differs(stdout), without: ["--temperature", "1.5"]),
            p("generate", ["--seed", "7", "--temperature", "1.5"], .differs(stdout), without: ["--temperature", "1.5"]),
            p("generate", ["--no-special-tokens"], .differs(stdout)),
            p("generate", ["--top-p", "0.5"], .refused("greedy decoding")),
            p("generate", ["--seed", "7"], .refused("greedy decoding")),

            p("calibrate", ["--model", "$T/tiny2"], .differs(tree("o"))),
            p("calibrate", ["--calib-dir", "$T/text2"], .differs(tree("o"))),
            p("calibrate", ["--samples", "3"], .differs(tree("o"))),
            p("calibrate", ["--seq-len", "8"], .differs(tree("o"))),
            p("calibrate", ["--seed", "1"], .differs(tree("o"))),
            p("calibrate", ["--output", "$D/p"], .differs(listing)),
            p("calibrate", ["--cache-dtype", "f16"], .differs(tree("o"))),

            p("prune", ["--model", "$T/tiny2"], .differs(tree("o"))),
            p("prune", ["--method", "frequency", "--calib", "$T/cal"], .differs(tree("o"))),
            p("prune", ["--output", "$D/p"], .differs(listing)),
            p("prune", ["--calib", "$T/cal"], .differs(json("o/plan.json", "parameters.reconstruction_error_sum"))),
            p("prune", ["--calib-dir", "$T/text"], .refused("moeits is data-free")),
            p("prune", ["--samples", "4"], .refused("only --calib-dir")),
            p("prune", ["--seq-len", "8"], .refused("only --calib-dir")),
            p("prune", ["--ratio", "0.5"], .differs(tree("o")), drop: ["--keep"]),
            p("prune", ["--keep", "2"], .differs(tree("o"))),
            p("prune", ["--tau", "1"], .differs(json("o/plan.json", "layers")), drop: ["--keep"]),
            p("prune", ["--bin-rule", "numpy<2.3"], .records(json("o/plan.json", "parameters.bin_rule"), "\"numpy<2.3\"")),
            p("prune", ["--nmi-weights", "1,0,0"], .differs(file("o/plan.json"))),
            p("prune", ["--seed", "1"], .differs(json("o/plan.json", "layers")), variant: "calibrated"),
            p("prune", ["--population", "3"], .records(json("o/plan.json", "parameters.population"), "\"3\""), variant: "moei2"),
            p("prune", ["--generations", "2"], .records(json("o/plan.json", "parameters.generations"), "\"2\""), variant: "moei2"),
            p("prune", ["--candidates", "2"], .records(json("o/plan.json", "parameters.K"), "\"2\""), variant: "moei2"),
            p("prune", ["--block-size", "1"], .records(json("o/plan.json", "parameters.T"), "\"1\""), variant: "moei2"),
            p("prune", ["--fitness-tokens", "8"], .records(json("o/plan.json", "parameters.fitness_tokens"), "\"8\""), variant: "moei2"),
            p("prune", ["--field-sequences", "2"], .records(json("o/plan.json", "parameters.field_sequences"), "\"2\""), variant: "moei2"),
            p("prune", ["--uniform-counts"], .records(json("o/plan.json", "parameters.counts"), "\"uniform\""), variant: "moei2"),
            p("prune", ["--population", "3"], .refused("only moei2")),
            p("prune", ["--uniform-counts"], .refused("only moei2")),
            p("prune", ["--fitness-tokens", "8"], .refused("calibration tokens")),
            p("prune", ["--seed", "1"], .refused("seeded")),

            p("decompose", ["--model", "$T/tiny2"], .differs(tree("o"))),
            p("decompose", ["--method", "svdllm", "--calib", "$T/cal"], .differs(tree("o"))),
            p("decompose", ["--calib", "$T/cal"], .refused("no calibration")),
            p("decompose", ["--calib-dir", "$T/text2"], .differs(tree("o")), variant: "svdllm", drop: ["--calib"]),
            p("decompose", ["--samples", "3"], .differs(tree("o")), variant: "calibrated"),
            p("decompose", ["--seq-len", "8"], .differs(tree("o")), variant: "calibrated"),
            p("decompose", ["--seed", "1"], .differs(tree("o")), variant: "calibrated"),
            p("decompose", ["--ratio", "0.5"], .differs(tree("o")), drop: ["--rank"]),
            p("decompose", ["--rank", "2"], .differs(tree("o"))),
            p("decompose", ["--rank-alloc", "importance"], .differs(tree("o")), variant: "svdllm"),
            p("decompose", ["--alpha", "1", "--rank-alloc", "importance"], .differs(tree("o")), variant: "svdllm", without: ["--rank-alloc", "importance"]),
            p("decompose", ["--importance-tokens", "8", "--rank-alloc", "importance"], .differs(tree("o")), variant: "svdllm",
              without: ["--rank-alloc", "importance"]),
            p("decompose", ["--targets", "gate"], .differs(tree("o"))),
            p("decompose", ["--update-steps", "2", "--update-batch", "1"], .differs(tree("o")), variant: "calibrated"),
            p("decompose", ["--update-lr", "0.01"], .refused("--update-steps")),
            p("decompose", ["--update-rank", "2"], .refused("--update-steps")),
            p("decompose", ["--update-batch", "2"], .refused("--update-steps")),
            p("decompose", ["--output", "$D/p"], .differs(listing)),
            p("decompose", ["--calib-dir", "$T/text"], .refused("no calibration")),
            p("decompose", ["--seed", "1"], .refused("only --calib-dir")),
            p("decompose", ["--samples", "3"], .refused("only --calib-dir")),
            p("decompose", ["--alpha", "1"], .refused("only importance ranks")),
            p("decompose", ["--importance-tokens", "8"], .refused("only importance ranks")),
            p("decompose", ["--max-memory", "64MiB", "--report", "$D/report.json"], .records(report("memory_budget_mib"), "64"), variant: "calibrated"),
            p("decompose", ["--max-memory", "64MiB"], .refused("no layer-major pass")),

            p("compress", ["--model", "$T/tiny2"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--recipe", "moeits"], .refused("invalid value")),
            p("compress", ["--prune-ratio", "0.5"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--keep-params", "0.3"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--method", "svd"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--rank-alloc", "uniform"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--alpha", "1"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--targets", "gate"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--calib-dir", "$T/text2"], .differs(json("o/plan.json", "parameters.calibration"))),
            p("compress", ["--samples", "3"], .records(calibration(0), "3")),
            p("compress", ["--seq-len", "8"], .records(calibration(1), "8")),
            p("compress", ["--seed", "1"], .records(calibration(2), "1")),
            p("compress", ["--population", "3"], .records(json("o/plan.json", "parameters.population"), "\"3\"")),
            p("compress", ["--generations", "2"], .records(json("o/plan.json", "parameters.generations"), "\"2\"")),
            p("compress", ["--candidates", "2"], .records(json("o/plan.json", "parameters.K"), "\"2\"")),
            p("compress", ["--block-size", "1"], .records(json("o/plan.json", "parameters.T"), "\"1\"")),
            p("compress", ["--fitness-tokens", "8"], .records(json("o/plan.json", "parameters.fitness_tokens"), "\"8\"")),
            p("compress", ["--field-sequences", "2"], .records(json("o/plan.json", "parameters.field_sequences"), "\"2\"")),
            p("compress", ["--uniform-counts"], .records(json("o/plan.json", "parameters.counts"), "\"uniform\"")),
            p("compress", ["--heal-steps", "2", "--heal-batch", "1", "--heal-seq-len", "8", "--heal-rank", "2"], .differs(tree("o", except: ["compress.json"]))),
            p("compress", ["--heal-data", "$T/text2"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-lr", "0.01"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-rank", "4"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-alpha", "4"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-batch", "2"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-seq-len", "16"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--heal-targets", "q,k"], .differs(file("o/model.safetensors")), variant: "heal"),
            p("compress", ["--output", "$D/p"], .differs(listing)),
            p("compress", ["--heal-lr", "0.01"], .refused("only stage 3")),
            p("compress", ["--heal-targets", "q"], .refused("only stage 3")),
            p("compress", ["--alpha", "1", "--rank-alloc", "uniform"], .refused("only importance ranks")),

            p("heal", ["--model", "$T/tiny2"], .differs(file("o/adapter_model.safetensors"))),
            p("heal", ["--output", "$D/p"], .differs(listing)),
            p("heal", ["--lora-rank", "4"], .records(json("o/training_log.json", "lora.rank"), "4")),
            p("heal", ["--lora-alpha", "8"], .records(json("o/training_log.json", "lora.alpha"), "8")),
            p("heal", ["--lora-dropout", "0"], .records(json("o/training_log.json", "lora.dropout"), "0")),
            p("heal", ["--targets", "q,k"], .records(json("o/training_log.json", "lora.targets"), "[\"q\",\"k\"]")),
            p("heal", ["--merge"], .records(exists("o/merged/config.json"), "yes")),
            p("heal", ["--merge-dtype", "f16", "--merge"], .differs(tree("o/merged")), without: ["--merge"]),
            p("heal", ["--shard-size", "100KB", "--merge"], .differs(tree("o/merged")), without: ["--merge"]),
            p("heal", ["--data", "$T/text2"], .differs(json("o/training_log.json", "dataHash"))),
            p("heal", ["--merge-dtype", "f16"], .refused("only --merge")),
            p("heal", ["--shard-size", "100KB"], .refused("only --merge")),
            p("heal", ["--resume", "--steps", "3", "--checkpoint-every", "1", "--output", "$T/heal-interrupted"], .records(says("resuming at step 1 of 3"), "yes")),
            p("heal", ["--no-recompute"], .records(json("o/training_log.json", "settings.recompute"), "false")),

            p("compress-experts", ["--model", "$T/tiny2"], .differs(file("o/model.safetensors"))),
            p("compress-experts", ["--output", "$D/p"], .differs(listing)),
            p("compress-experts", ["--main-experts", "2", "--no-ce"], .differs(file("o/config.json")), without: ["--no-ce"]),
            p("compress-experts", ["--train", "ce-only"], .differs(json("o/training_log.json", "trainable"))),
            p("compress-experts", ["--no-ce"], .differs(file("o/config.json"))),
            p("compress-experts", ["--ce-lr", "0.001"], .records(json("o/training_log.json", "settings.ceLearningRate"), "0.001")),
            p("compress-experts", ["--data", "$T/text2"], .differs(json("o/training_log.json", "dataHash"))),
            p("compress-experts", ["--ce-lr", "0.001", "--no-ce"], .refused("--no-ce trains no")),
            p("compress-experts", ["--train", "ce-only", "--no-ce"], .refused("--no-ce trains no")),
            p("compress-experts", ["--resume", "--steps", "3", "--checkpoint-every", "1", "--output", "$T/ce-interrupted"],
              .records(says("resuming at step 1 of 3"), "yes")),
            p("compress-experts", ["--no-recompute"], .records(json("o/training_log.json", "settings.recompute"), "false")),

            p("run", ["--output", "$D/other"], .differs(listing)),
            p("run", ["--resume", "--output", "$B/run"], .records(says("skipped"), "yes")),

            p("export", ["--model", "$T/tiny"], .differs(tree("o"))),
            p("export", ["--dense"], .enables, drop: ["--dense"]),
            p("export", ["--uniform"], .enables, variant: "uniform", drop: ["--uniform"]),
            p("export", ["--gguf"], .enables, variant: "gguf", drop: ["--gguf"]),
            p("export", ["--gguf-type", "f16"], .differs(file("o.gguf")), variant: "gguf"),
            p("export", ["--original", "$T/tiny2"], .differs(tree("o")), variant: "uniform"),
            p("export", ["--output", "$D/p"], .differs(listing)),

            p("bench", ["--model", "$F/qwen2_moe"], .differs(stdoutJSON("active_weight_gb"))),
            p("bench", ["--tokens", "8"], .records(stdoutJSON("prompt_tokens"), "8")),
            p("bench", ["--decode", "3"], .records(stdoutJSON("decode_tokens"), "3")),
            p("bench", ["--rounds", "2"], .records(stdoutJSON("rounds"), "2")),
            p("bench", ["--seed", "1"], .differs(stdoutJSON("prompt_digest"))),
            p("bench", ["--json"], .records(isJSON, "yes"), variant: "table"),
            p("bench", ["--no-bandwidth"], .records({ stdoutJSON("memory_read_gb_per_second")($0) == "missing" ? "no" : "yes" }, "no"), variant: "bandwidth"),
            p("bench", ["--machine-only"], .refused("drop --model")),

            p("bench-tokenizer", ["--tokenizer", "$Q/tokenizer.json"], .differs(stdoutJSON("tokens"))),
            p("bench-tokenizer", ["--text-dir", "$T/text2"], .differs(stdoutJSON("tokens"))),
            p("bench-tokenizer", ["--rounds", "2"], .records(stdoutJSON("rounds"), "2")),
            p("bench-tokenizer", ["--lines"], .differs(stdoutJSON("tokens"))),
            p("bench-tokenizer", ["--json"], .records(isJSON, "yes"), variant: "table"),

            p("synth", ["--config", "$F/qwen2_moe/config.json"], .differs(tree("o"))),
            p("synth", ["--output", "$D/p"], .differs(listing)),
            p("synth", ["--layers", "1"], .differs(tree("o"))),
            p("synth", ["--seed", "1"], .differs(tree("o"))),
            p("synth", ["--dtype", "f16"], .differs(tree("o"))),
            p("synth", ["--mxfp4"], .differs(tree("o")), variant: "gpt-oss"),
            p("synth", ["--tokenizer-from", "$M"], .records(exists("o/tokenizer.json"), "yes")),
            p("synth", ["--check-weights"], .refused("reads no weights")),
        ]
        for command in ["heal", "compress-experts"] {
            for (option, v, key) in training { t.append(p(command, [option, v], .records(json("o/training_log.json", "settings.\(key)"), v))) }
        }
        return t
    }

    /// Shared options get one probe each on every command that has them (unless the table gives one).
    static func generic(_ command: String, _ option: String) -> Probe? {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        switch option {
        case "--threads": return p(command, ["--threads", "\(cores + 1)", "--report", "$D/report.json"], .records(report("threads"), "\(cores + 1)"))
        case "--max-memory": return p(command, ["--max-memory", "64MiB", "--report", "$D/report.json"], .records(report("memory_budget_mib"), "64"))
        case "--check-weights":
            return p(command, ["--check-weights", "--report", "$D/report.json"],
                     .records({ o in Int(report("counts.weights_checked")(o)).map { $0 > 0 ? "checked" : "none" } ?? "none" }, "checked"))
        case "--report": return p(command, ["--report", "$D/report.json"], .records({ report("stages")($0).hasPrefix("[{") ? "stages" : "none" }, "stages"))
        case "--quiet": return p(command, ["--quiet"], .quieter)
        case "--shard-size": return p(command, ["--shard-size", "100KB"], .differs(tree("o")))
        case "--overwrite":
            let file = ["logits": "$D/o.safetensors", "eval tasks": "$D/s.jsonl", "eval instructions": "$D/s.jsonl"][command] ?? "$D/o"
            return p(command, ["--overwrite"], .enables, existing: file)
        default: return nil
        }
    }

    // MARK: the walk

    /// Every (command path, long option name) of the binary's definitions, but the built-in help and version.
    static func definitions() throws -> Set<String> {
        let r = try CLI.run(["--experimental-dump-help"])
        let root = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        var out = Set<String>()
        func walk(_ c: [String: Any], _ path: [String]) {
            for a in c["arguments"] as? [[String: Any]] ?? [] where a["kind"] as? String != "positional" {
                for n in a["names"] as? [[String: Any]] ?? [] where n["kind"] as? String == "long" {
                    let name = n["name"] as! String
                    if !["help", "version"].contains(name) { out.insert(path.joined(separator: " ") + " --" + name) }
                }
            }
            for s in c["subcommands"] as? [[String: Any]] ?? [] where s["commandName"] as? String != "help" {
                walk(s, path + [s["commandName"] as! String])
            }
        }
        walk(root["command"] as! [String: Any], [])
        return out
    }

    /// `base` with `extra` added: the options `extra` names and those in `drop` are left out of `base` first.
    static func merge(_ base: [String], _ extra: [String], drop: [String] = []) -> [String] {
        let names = Set(extra.filter { $0.hasPrefix("--") } + drop)
        var out: [String] = [], i = 0
        while i < base.count {
            if names.contains(base[i]) {
                i += 1
                while i < base.count, !base[i].hasPrefix("--") { i += 1 }
                continue
            }
            out.append(base[i])
            i += 1
        }
        return out + extra
    }

    final class Walk {
        let shared = TempDir()
        var count = 0
        var runs = 0
        var memo: [String: Outcome] = [:]
        var baseDirs: [String: URL] = [:]

        func expand(_ args: [String], dir: URL, base: URL?) -> [String] {
            args.map {
                $0.replacingOccurrences(of: "$T", with: shared.url.path).replacingOccurrences(of: "$D", with: dir.path)
                    .replacingOccurrences(of: "$B", with: base?.path ?? "$B")
                    .replacingOccurrences(of: "$F", with: CLI.fixture(""))
                    .replacingOccurrences(of: "$M", with: CLI.shared.appendingPathComponent("models/mixtral-ref").path)
                    .replacingOccurrences(of: "$Q", with: CLI.shared.appendingPathComponent("models/qwen-moe-ref").path)
            }
        }

        /// Runs `command` with `args` in a fresh folder (the same arguments run once).
        func run(_ command: String, _ args: [String], base: URL? = nil, existing: String? = nil, env: [String: String] = [:]) throws -> Outcome {
            let key = command + "\u{0}" + args.joined(separator: "\u{0}") + "\u{0}" + (existing ?? "") + "\u{0}" + (base?.path ?? "")
            if env.isEmpty, let o = memo[key] { return o }
            count += 1
            let dir = shared.url.appendingPathComponent("run\(count)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            if let existing {
                let path = expand([existing], dir: dir, base: base)[0]
                if URL(fileURLWithPath: path).pathExtension.isEmpty {
                    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                } else {
                    try "keep me".write(toFile: path, atomically: true, encoding: .utf8)
                }
            }
            runs += 1
            let r = try CLI.run(command.split(separator: " ").map(String.init) + expand(args, dir: dir, base: base), env: env)
            let o = Outcome(result: r, dir: dir)
            if env.isEmpty { memo[key] = o }
            return o
        }

        func must(_ command: String, _ args: [String], env: [String: String] = [:]) throws {
            let o = try run(command, args, env: env)
            #expect(o.result.status == 0, "setup: \(command) \(args): \(o.result.stderr)")
        }

        /// Models and data the probes share.
        func setUp() throws {
            let t = shared.url
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: CLI.fixture("mixtral/config.json")))) as! [String: Any]
            config["vocab_size"] = 4096   // the reference tokenizer's
            try JSONSerialization.data(withJSONObject: config).write(to: t.appendingPathComponent("config.json"))
            for (name, seed) in [("tiny", "0"), ("tiny2", "1")] {
                try must("synth", ["--config", "$T/config.json", "--output", "$T/\(name)", "--dtype", "f32", "--seed", seed, "--tokenizer-from", "$M", "--quiet"])
            }
            let calib = CLI.shared.appendingPathComponent("data/calib")
            for (dir, file) in [("text", "austen.txt"), ("text2", "kjv.txt")] {
                let text = try String(contentsOf: calib.appendingPathComponent(file), encoding: .utf8)
                try FileManager.default.createDirectory(at: t.appendingPathComponent(dir), withIntermediateDirectories: true)
                try String(text.prefix(3000)).write(to: t.appendingPathComponent("\(dir)/\(dir == "text" ? "a" : "b").txt"), atomically: true, encoding: .utf8)
            }
            try "[1, 2, 3, 4, 5, 6]".write(to: t.appendingPathComponent("ids.json"), atomically: true, encoding: .utf8)
            try "[7, 8, 9, 10, 11, 12]".write(to: t.appendingPathComponent("ids2.json"), atomically: true, encoding: .utf8)
            func item(_ i: Int, _ context: String, _ choices: [String], _ label: Int) -> String {
                let obj: [String: Any] = ["id": "\(i)", "task": "walk", "context": context, "choices": choices, "label": label]
                return String(decoding: try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self)
            }
            try [item(0, "The sky is", [" blue", " green"], 0), item(1, "Two and two make", [" four", " five"], 0),
                 item(2, "Water is", [" wet", " dry"], 0)].joined(separator: "\n").write(to: t.appendingPathComponent("tasks.jsonl"), atomically: true, encoding: .utf8)
            try [item(0, "In the beginning", [" was", " is"], 0), item(1, "Once upon a", [" time", " hill"], 0)]
                .joined(separator: "\n").write(to: t.appendingPathComponent("tasks2.jsonl"), atomically: true, encoding: .utf8)
            func instruction(_ i: String, _ r: String) -> String {
                String(decoding: try! JSONSerialization.data(withJSONObject: ["instruction": i, "response": r], options: [.sortedKeys]), as: UTF8.self)
            }
            try [instruction("Name a colour.", "Blue."), instruction("Add two and two.", "Four."), instruction("Say hello.", "Hello.")]
                .joined(separator: "\n").write(to: t.appendingPathComponent("instructions.jsonl"), atomically: true, encoding: .utf8)
            try [instruction("Name a fruit.", "An apple."), instruction("Count to three.", "One, two, three.")]
                .joined(separator: "\n").write(to: t.appendingPathComponent("instructions2.jsonl"), atomically: true, encoding: .utf8)
            try "model: \(t.path)/tiny\nseed: 0\nstages:\n  - prune: {method: moeits, keep: 3}\n"
                .write(to: t.appendingPathComponent("recipe.yaml"), atomically: true, encoding: .utf8)
            try must("logits", ["--model", "$F/mixtral", "--ids-file", "$T/ids2.json", "--output", "$T/ref.safetensors"])
            try must("calibrate", ["--model", "$T/tiny", "--calib-dir", "$T/text", "--samples", "6", "--seq-len", "16", "--output", "$T/cal", "--quiet"])
            try must("decompose", ["--model", "$T/tiny", "--method", "svd", "--rank-alloc", "uniform", "--rank", "4", "--output", "$T/lowrank", "--quiet"])
            try must("prune", ["--model", "$T/tiny", "--method", "moeits", "--keep", "3", "--output", "$T/pruned", "--quiet"])
            // Training runs interrupted (as by a kill) after their checkpoint at step 1 of 2, for --resume.
            for (command, out) in [("heal", "heal-interrupted"), ("compress-experts", "ce-interrupted")] {
                let args = OptionWalkTests.merge(OptionWalkTests.bases[command]!, ["--steps", "3", "--checkpoint-every", "1", "--output", "$T/\(out)", "--quiet"])
                let o = try run(command, args, env: ["MOEPRESS_KILL_AFTER_RECORDS": "1"])
                #expect(o.result.status == 137, "setup: \(command) was not interrupted: \(o.result.stderr)")
            }
        }
    }

    @Test func everyOptionIsHonouredOrRefused() throws {
        let start = Date()
        let defined = try Self.definitions()
        var probes = Self.table()
        let given = Set(probes.map { "\($0.command) \($0.option)" })
        for d in defined.sorted() where !given.contains(d) {
            let parts = d.components(separatedBy: " --")
            if let g = Self.generic(parts[0], "--" + parts[1]) { probes.append(g) }
        }
        let probed = Set(probes.map { "\($0.command) \($0.option)" })
        let unprobed = defined.subtracting(probed).sorted()
        #expect(unprobed.isEmpty, "options without a probe: \(unprobed.joined(separator: ", "))")
        let unknown = probed.subtracting(defined).sorted()
        #expect(unknown.isEmpty, "probes of options that do not exist: \(unknown.joined(separator: ", "))")

        let walk = Walk()
        try walk.setUp()
        func baseArgs(_ p: Probe) -> [String] {
            let key = p.variant.isEmpty ? p.command : "\(p.command)/\(p.variant)"
            guard let b = Self.bases[key] else { Issue.record("no base run for \(key)"); return [] }
            return b
        }
        var bases: [String: Outcome] = [:]
        func base(_ p: Probe) throws -> Outcome {
            let key = "\(p.command)/\(p.variant)"
            if let o = bases[key] { return o }
            let o = try walk.run(p.command, baseArgs(p))
            #expect(o.result.status == 0, "base run of \(key) failed: \(o.result.stderr)")
            bases[key] = o
            return o
        }
        func describe(_ p: Probe) -> String { "\(p.command) \(p.option)\(p.variant.isEmpty ? "" : " [\(p.variant)]")" }
        func lines(_ s: String) -> Int { s.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).count }

        // Probes that record a value share one run per command and variant.
        var batches: [String: [Probe]] = [:]
        for p in probes {
            guard case .records = p.check, p.drop.isEmpty, p.without == nil, p.existing == nil, !p.with.contains("--resume") else { continue }
            batches["\(p.command)/\(p.variant)", default: []].append(p)
        }
        let batched = Set(batches.values.flatMap { $0.map(describe) })
        for (_, group) in batches.sorted(by: { $0.key < $1.key }) {
            let b = try base(group[0])
            let args = group.reduce(baseArgs(group[0])) { Self.merge($0, $1.with) }
            let o = try walk.run(group[0].command, args, base: b.dir)
            #expect(o.result.status == 0, "\(group.map(describe)): \(o.result.stderr)")
            for p in group {
                guard case .records(let see, let value) = p.check else { continue }
                #expect(see(o) == value, "\(describe(p)): shows \(see(o)), not \(value)")
                #expect(see(b) != value, "\(describe(p)): the run without it shows \(value) too")
            }
        }
        for p in probes where !batched.contains(describe(p)) {
            let b = try base(p)
            let withArgs = Self.merge(baseArgs(p), p.with, drop: p.drop)
            if case .refused(let text) = p.check {
                let o = try walk.run(p.command, withArgs, base: b.dir, existing: p.existing)
                let r = o.result
                #expect(r.status == 64 && r.stderr.hasPrefix("error: ") && lines(r.stderr) == 1 && r.stderr.contains(text)
                        && r.stderr.contains(p.option) && r.stderr.hasSuffix(")\n"), "\(describe(p)): not refused: \(r.status) \(r.stderr)")
                continue
            }
            let o = try walk.run(p.command, withArgs, base: b.dir, existing: p.existing)
            #expect(o.result.status == 0, "\(describe(p)): \(o.result.stderr)")
            let w: Outcome
            var enables = false
            if case .enables = p.check { enables = true }
            if p.without != nil || p.existing != nil || (enables && !p.drop.isEmpty) {
                w = try walk.run(p.command, Self.merge(baseArgs(p), p.without ?? [], drop: enables ? p.drop : []), base: b.dir, existing: p.existing)
            } else {
                w = b
            }
            switch p.check {
            case .differs(let see):
                #expect(w.result.status == 0, "\(describe(p)): the run without it failed: \(w.result.stderr)")
                #expect(see(o) != see(w), "\(describe(p)): changes nothing (\(see(o).prefix(200)))")
            case .records(let see, let value):
                #expect(see(o) == value, "\(describe(p)): shows \(see(o)), not \(value)")
                #expect(see(w) != value, "\(describe(p)): the run without it shows \(value) too")
            case .enables:
                #expect(w.result.status != 0, "\(describe(p)): the run without it succeeds too")
            case .quieter:
                #expect(w.result.status == 0 && lines(o.result.stderr) < lines(w.result.stderr),
                        "\(describe(p)): \(lines(o.result.stderr)) lines on stderr, without it \(lines(w.result.stderr))")
            case .refused: break
            }
        }
        let seconds = Date().timeIntervalSince(start)
        print("option walk: \(defined.count) options, \(probes.count) probes, \(walk.runs) runs in \(String(format: "%.1f", seconds)) s")
    }
}
