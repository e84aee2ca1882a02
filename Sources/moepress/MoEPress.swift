import ArgumentParser
import Foundation
import MoETensor
import MoEModels
import MoEPipeline

@main
struct MoEPress: ParsableCommand {
    /// Makes sure OpenBLAS runs its kernels for this CPU (see `BLASRuntime`), then parses and runs the command.
    /// Usage errors are one line, `error: <problem> (<option or argument>)`, with exit code 64; errors while
    /// running are one line naming the file or option, with exit code 1.
    static func main() {
        BLASRuntime.reexecWithBetterCoreIfNeeded()
        let args: [String]
        do { args = try Arguments.normalise(Array(CommandLine.arguments.dropFirst())) } catch {
            Console.note("error: \(error)")
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch let e as ExitCode {
            Foundation.exit(e.rawValue)
        } catch let e as CleanExit {
            exit(withError: e)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }   // --help, --version
            Console.note("error: \(code == .validationFailure ? Arguments.oneLine(error) : "\(error)")")
            Foundation.exit(code == .validationFailure ? code.rawValue : ExitCode.failure.rawValue)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "moepress",
        abstract: "Compress Mixture-of-Experts language models, and run them, on CPU.",
        discussion: """
        Reads Hugging Face checkpoints (config.json + *.safetensors) of these model_type values: \
        \(ModelRegistry.supportedModelTypes.joined(separator: ", ")).
        """,
        version: moepressVersion,
        subcommands: [Inspect.self, Tokenize.self, Logits.self, Eval.self, Generate.self, Calibrate.self, Prune.self, Decompose.self, Compress.self, Heal.self, CompressExperts.self, Run.self, ReportCommand.self, Export.self, Bench.self, BenchTokenizer.self, Synth.self])
}

/// Options every compute command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads to use (default: all cores). BLAS itself stays single-threaded; MoEPress parallelises over experts, heads and output columns.")
    var threads: Int?

    @Option(help: ArgumentHelp("Write a JSON report of wall time, peak anonymous memory (RssAnon), peak RSS and storage bytes read/written, by stage.",
                               valueName: "file"))
    var report: String?

    @Flag(help: "Scan every weight for NaN/Inf when the model is loaded, and refuse it naming the tensor (reads the whole model once).")
    var checkWeights = false

    /// Runs a command's work: configures the cores and kernels, turns errors into one line and a non-zero exit,
    /// and writes the resource report when asked.
    func run<T>(_ body: () throws -> T) throws -> T {
        try apply()
        let result = try reportingErrors(body)
        if let report {
            try reportingErrors {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                do { try enc.encode(ResourceMonitor.shared.report()).write(to: URL(fileURLWithPath: report), options: .atomic) } catch {
                    throw CLIError("\(report): cannot write the report (\(error.localizedDescription))")
                }
            }
        }
        return result
    }

    /// Sets the threads and the kernels' instruction set (`MOEPRESS_ISA`); a bad choice is a clear error.
    func apply() throws {
        ResourceMonitor.shared.start()
        if checkWeights { setenv("MOEPRESS_CHECK_WEIGHTS", "1", 1) }
        if let threads, threads < 1 { throw usage("must be at least 1", "--threads") }
        Compute.configure(threads: threads)
        if let problem = KernelISA.configureFromEnvironment() {
            log("error: \(problem)")
            throw ExitCode.failure
        }
    }
}

/// Errors print as one line on stderr, and the exit code is non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func log(_ s: String) { Console.note(s) }

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

/// Removes work folders `<prefix><pid>` beside `out` left by runs that were killed (their process is gone), so
/// a killed run's temporary calibration caches do not stay behind once the command is run again.
func removeStaleWork(beside out: URL, prefix: String) {
    let parent = out.deletingLastPathComponent()
    for name in (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? [] where name.hasPrefix(prefix) {
        guard let pid = Int32(name.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
        try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
    }
}

/// A single-file output: refused when it exists unless `overwrite`, or when its folder does not exist
/// (checked before any work; the file itself is written under a temporary name and renamed).
func newFileOutput(_ path: String, overwrite: Bool) throws -> URL {
    let out = try newOutput(path, overwrite: overwrite)
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: out.deletingLastPathComponent().path, isDirectory: &isDir), isDir.boolValue else {
        throw CLIError("\(out.path): its folder does not exist")
    }
    if FileManager.default.fileExists(atPath: out.path, isDirectory: &isDir), isDir.boolValue { throw CLIError("\(out.path): is a folder") }
    return out
}

/// Checks flags against the one rule set recipes use (`OptionRules`): flag, the option's recipe name, its value.
func checkOptions(_ stage: String, _ values: [(String, String, Double?)]) throws {
    do { try OptionRules.check(stage, values.map { (flag: $0.0, key: $0.1, value: $0.2) }) } catch let e as OptionError {
        throw ValidationError(e.message)
    }
}
