import ArgumentParser
import Foundation
import MoETensor
import MoEModels
import MoETokenizer
import MoEEval

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model: perplexity on text files, accuracy on multiple-choice tasks.",
        subcommands: [EvalPerplexity.self, EvalTasks.self, EvalInstructions.self])
}

/// Loads a model folder and its tokenizer.json.
func loadModelAndTokenizer(_ path: String) throws -> (CausalLM, Tokenizer) {
    let url = modelURL(path)
    let model = try ResourceMonitor.shared.stage("load") { try ModelRegistry.load(directory: url) }
    let tok = try Tokenizer(modelDirectory: url)
    return (model, tok)
}

/// Per-item results as JSON lines, written under a temporary name and renamed (never half written).
func writeJSONLines<T: Encodable>(_ items: [T], to url: URL) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    let lines = try items.map { String(decoding: try enc.encode($0), as: UTF8.self) }
    let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
    try (lines.joined(separator: "\n") + "\n").write(to: tmp, atomically: false, encoding: .utf8)
    guard rename(tmp.path, url.path) == 0 else { try? FileManager.default.removeItem(at: tmp); throw CLIError("\(url.path): cannot write") }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try enc.encode(value), as: UTF8.self))
}

struct EvalPerplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of each text file and overall.",
        discussion: """
        Each file is tokenized whole (no special tokens) and cut into consecutive windows of --seq-len tokens; \
        a last window shorter than 2 tokens is dropped. Every window is scored on its own (no BOS, no carried \
        context) and the NLL is averaged over every predicted token. The overall numbers pool all files' tokens. \
        --validation-of FOLDER scores the validation slice of each .txt file of FOLDER instead: its last ~10%, cut \
        at a line start, which calibration, pruning and training (prune, calibrate, heal, compress-experts, recipes) \
        never read. Tune on it (e.g. --validation-of ../shared/data/calib); keep dev text for the final evaluation.
        """)

    @Option(help: "A Hugging Face model folder (with tokenizer.json).")
    var model: String

    @Option(name: .customLong("text-file"), help: "A UTF-8 text file (repeat for several).")
    var textFiles: [String] = []

    @Option(help: "Score the validation slice (last ~10%, never trained or calibrated on) of every .txt file of this folder.")
    var validationOf: String?

    @Option(help: "Window length in tokens.")
    var seqLen = 256

    @OptionGroup var memory: MemoryOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard textFiles.isEmpty != (validationOf == nil) else { throw usage("give one or more --text-file, or --validation-of FOLDER, not both", "--text-file, --validation-of") }
        try checkOptions("eval", [("--seq-len", "seq_len", Double(seqLen))])
    }

    func run() throws {
        try compute.run {
            // Read every text before loading the model (a bad file fails first).
            let texts = try validationOf.map { try Perplexity.validationTexts(of: URL(fileURLWithPath: $0)) }
                ?? textFiles.map { (URL(fileURLWithPath: $0).lastPathComponent, try readText(URL(fileURLWithPath: $0))) }
            let (m, tok) = try loadModelAndTokenizer(model)
            let r = try ResourceMonitor.shared.stage("perplexity") {
                try Perplexity.evaluate(model: m, tokenizer: tok, texts: texts, seqLen: seqLen, budget: memory.budget, quiet: quiet)
            }
            if json { try printJSON(r); return }
            print("file".padding(toLength: 24, withPad: " ", startingAt: 0) + "  perplexity       nll   tokens")
            for (name, s) in r.files.sorted(by: { $0.key < $1.key }) {
                print(name.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "  %10.3f  %8.5f  %7d", s.perplexity, s.nll, s.tokens))
            }
            print("all".padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "  %10.3f  %8.5f  %7d", r.perplexity, r.nll, r.tokens))
        }
    }
}

struct EvalInstructions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instructions",
        abstract: "Held-out instruction following: response log-likelihood and exact match of greedy answers.",
        discussion: """
        Each line: {"instruction", "response"[, "input"]}, formatted with the template training uses \
        ("Instruction:\\n{instruction}\\n\\nResponse:\\n", no special tokens). Reports the mean over items of \
        log p(response | prompt), the response NLL per token, and the fraction of greedy answers (at most the \
        reference's tokens + 4) equal to the reference after normalisation (case, white space, final full stop). \
        --samples writes every item's answer and score (JSONL).
        """)

    @Option(help: "A Hugging Face model folder (with tokenizer.json).") var model: String
    @Option(help: "A JSONL file of instruction/response pairs.") var data: String
    @Option(help: "Score only the first N items.") var limit: Int?
    @Option(help: "Write per-item answers and scores (JSONL) here.") var samples: String?
    @Flag(help: "Replace an existing --samples file.") var overwrite = false
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("eval", [("--limit", "limit", limit.map(Double.init))])
        if overwrite && samples == nil { throw usage("only --samples writes a file", "--overwrite") }
    }

    func run() throws {
        try compute.run {
            let samplesURL = try samples.map { try newFileOutput($0, overwrite: overwrite) }
            let items: [InstructionExample]
            do { items = try InstructionExample.load(URL(fileURLWithPath: data), limit: limit) } catch let e as DataFileError { throw CLIError(e.description) }
            let (m, tok) = try loadModelAndTokenizer(model)
            let r = try ResourceMonitor.shared.stage("instructions") { try Instructions.score(model: m, tokenizer: tok, items: items, budget: memory.budget, quiet: quiet) }
            if let url = samplesURL { try writeJSONLines(r.samples, to: url) }
            if json {
                var summary = r
                summary.samples = []
                try printJSON(summary)
                return
            }
            print(String(format: "items %d  mean log-likelihood %.4f  response NLL/token %.4f  exact match %.4f", r.items, r.meanLogLikelihood,
                         r.responseNLLPerToken, r.exactMatch))
        }
    }
}

struct EvalTasks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks",
        abstract: "Accuracy on multiple-choice tasks (JSONL, lm-eval protocol).",
        discussion: """
        Each line: {"id", "task", "context", "choices": [...], "label"}. A choice's score is the sum of the \
        log-probabilities of its tokens after the context; context and choice are encoded separately, without \
        special tokens. acc = argmax score; acc_norm = argmax score / characters of the choice (lm-eval); ties \
        go to the lowest index. The context is run once and its KV cache reused for every choice. \
        --limit N keeps the first N items of the file.
        """)

    @Option(help: "A Hugging Face model folder (with tokenizer.json).")
    var model: String

    @Option(help: "A JSONL task file.")
    var tasks: String

    @Option(help: "Score only the first N items.")
    var limit: Int?

    @Option(help: "Most items run through the model together (the memory budget may allow fewer).")
    var batch: Int?

    @OptionGroup var memory: MemoryOptions

    @Option(help: "Write per-item scores (JSONL) here.")
    var samples: String?

    @Flag(help: "Replace an existing --samples file.")
    var overwrite = false

    @Flag(help: "Encode the context with the tokenizer's special tokens (e.g. BOS), as lm-eval does unless told add_bos_token=False.")
    var addSpecialTokens = false

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("eval", [("--limit", "limit", limit.map(Double.init)), ("--batch", "batch", batch.map(Double.init))])
        if overwrite && samples == nil { throw usage("only --samples writes a file", "--overwrite") }
    }

    func run() throws {
        try compute.run {
            let samplesURL = try samples.map { try newFileOutput($0, overwrite: overwrite) }
            let items = try MultipleChoice.load(URL(fileURLWithPath: tasks), limit: limit)
            let (m, tok) = try loadModelAndTokenizer(model)
            let start = Date()
            let scores = try ResourceMonitor.shared.stage("tasks") {
                try MultipleChoice.score(model: m, tokenizer: tok, items: items, budget: memory.budget, limit: batch,
                                         contextSpecialTokens: addSpecialTokens, quiet: quiet)
            }
            let seconds = Date().timeIntervalSince(start)
            if let url = samplesURL { try writeJSONLines(scores, to: url) }
            let r = MultipleChoice.report(scores)
            if !quiet { log(String(format: "tasks: %d items in %.2f s (%.1f items/s)", items.count, seconds, Double(items.count) / seconds)) }
            if json { try printJSON(r); return }
            print("task".padding(toLength: 28, withPad: " ", startingAt: 0) + "     acc  acc_norm      n")
            for (name, s) in r.tasks.sorted(by: { $0.key < $1.key }) {
                print(name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "  %6.4f    %6.4f  %5d", s.acc, s.acc_norm, s.n))
            }
            print("all".padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "  %6.4f    %6.4f  %5d", r.acc, r.acc_norm, r.n))
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt (greedy, or seeded temperature/top-p sampling), streamed to stdout.")

    @Option(help: "A Hugging Face model folder (with tokenizer.json).")
    var model: String

    @Option(help: "The prompt.")
    var prompt: String

    @Option(help: "Most tokens to generate.")
    var maxTokens = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Nucleus sampling (with --temperature above 0): keep the smallest set of tokens whose probability reaches P (default: 1, all).")
    var topP: Float?

    @Option(help: "Seed of the sampler (with --temperature above 0; default: 0).")
    var seed: UInt64?

    @Flag(help: "Do not add the tokenizer's special tokens (e.g. BOS) to the prompt.")
    var noSpecialTokens = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("eval", [("--max-tokens", "max_tokens", Double(maxTokens)), ("--temperature", "temperature", Double(temperature)),
                                  ("--top-p", "top_p", topP.map(Double.init))])
        if temperature == 0 {
            if topP != nil { throw usage("greedy decoding (--temperature 0) does not sample", "--top-p") }
            if seed != nil { throw usage("greedy decoding (--temperature 0) does not sample", "--seed") }
        }
    }

    func run() throws {
        try compute.run {
            let (m, tok) = try loadModelAndTokenizer(model)
            print(prompt, terminator: "")
            let r = try ResourceMonitor.shared.stage("generate") { try Generation.generate(model: m, tokenizer: tok, prompt: prompt, maxTokens: maxTokens,
                                            sampling: Sampling(temperature: temperature, topP: topP ?? 1, seed: seed ?? 0),
                                            addSpecialTokens: !noSpecialTokens) { piece in
                print(piece, terminator: "")
                fflush(nil)
            } }
            print("")
            log(String(format: "%d tokens, time to first token %.1f ms, %.1f tokens/s", r.ids.count, r.timeToFirstToken * 1000, r.decodeTokensPerSecond))
        }
    }
}
