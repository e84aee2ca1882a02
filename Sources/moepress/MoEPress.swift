import ArgumentParser
import Foundation
import MoETensor

@main
struct MoEPress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moepress",
        abstract: "Compress Mixture-of-Experts language models, and run them, on CPU.",
        discussion: """
        Reads Hugging Face checkpoints (config.json + *.safetensors) of the Mixtral, Qwen2-MoE, Qwen3-MoE, \
        OLMoE, DeepSeek-V2 and DeepSeek-V3 families.
        """,
        version: "0.1.0",
        subcommands: [Inspect.self, Tokenize.self, Logits.self, Eval.self, Generate.self, Calibrate.self, Prune.self, Decompose.self, Compress.self, Heal.self, CompressExperts.self, Run.self, ReportCommand.self, Export.self, Bench.self, BenchTokenizer.self])
}

/// Options every compute command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads to use (default: all cores). BLAS itself stays single-threaded; MoEPress parallelises over experts, heads and output columns.")
    var threads: Int?

    func apply() { Compute.configure(threads: threads) }
}

/// Errors print as one line on stderr, and the exit code is non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func log(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// Runs `body`, turning any thrown error into a one-line message and exit code 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as CleanExit {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch {
        log("error: \(error)")
        throw ExitCode.failure
    }
}

func modelURL(_ path: String) -> URL { URL(fileURLWithPath: path).standardizedFileURL }

/// The output folder of a command, refused when it exists unless `overwrite`.
func newOutput(_ path: String, overwrite: Bool) throws -> URL {
    let out = URL(fileURLWithPath: path).standardizedFileURL
    if FileManager.default.fileExists(atPath: out.path) && !overwrite { throw CLIError("\(out.path): already exists (pass --overwrite to replace it)") }
    return out
}
