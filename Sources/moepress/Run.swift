import ArgumentParser
import Foundation
import MoEPipeline

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a compression recipe (YAML): calibrate, prune, decompose, heal, evaluate, export.",
        discussion: """
        The recipe is validated completely before any work; errors name the file and line. Each stage writes \
        RUN_DIR/NN-<stage>/ (the output model in model/, plus plan.json, decompose.json, training logs and \
        routing statistics) through a staging folder renamed when complete, with a manifest.json of its \
        options, input model hash, seed, calibration and version. --resume skips every stage whose manifest \
        matches and redoes the rest; a stage killed midway leaves only its staging folder, which is discarded. \
        At the end the original and the compressed model(s) are evaluated and RUN_DIR/run.json is written; the \
        before/after table goes to stdout. See recipes/ and the README for the format.
        """)

    @Argument(help: "The recipe file.") var recipe: String
    @Option(help: "The run folder (default: runs/<recipe name>).") var output: String?
    @Flag(help: "Continue an earlier run in the same folder, skipping finished stages.") var resume = false
    @Flag(help: "No progress on stderr.") var quiet = false
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        try compute.run {
            let r = try Recipe(file: URL(fileURLWithPath: recipe))
            let dir = URL(fileURLWithPath: output ?? "runs/" + URL(fileURLWithPath: recipe).deletingPathExtension().lastPathComponent)
            let summary = try Pipeline(recipe: r, runDir: dir, resume: resume, quiet: quiet, memory: memory.budget).run()
            print(Pipeline.table(summary))
            if !quiet { log("run: \(dir.path)/run.json; `moepress report \(dir.path)` writes report.html") }
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write RUN_DIR/report.html: a self-contained page (inline SVG, no network) about a `moepress run`.")

    @Argument(help: "The run folder.") var runDir: String

    func run() throws {
        try reportingErrors {
            let out = try Report.write(runDir: URL(fileURLWithPath: runDir))
            log("report: \(out.path)")
        }
    }
}
