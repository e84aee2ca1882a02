import ArgumentParser
import Foundation
import MoETokenizer

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode text to token ids (a JSON array on stdout), or decode ids back to text.",
        discussion: """
        Uses the model's tokenizer.json with the semantics of HF `tokenizers`: special tokens written in the \
        text are recognised; --special also adds the post-processor's template (e.g. a leading <s>). \
        With --decode the input is a JSON array of ids.
        """)

    @Option(help: "A model folder with a tokenizer.json.")
    var model: String?

    @Option(help: "A tokenizer.json file.")
    var tokenizer: String?

    @Option(help: "The text (or, with --decode, the JSON id array).")
    var text: String?

    @Option(help: "A file holding the text (or, with --decode, the JSON id array).")
    var textFile: String?

    @Flag(help: "Add the special tokens of the post-processor template.")
    var special = false

    @Flag(help: "Decode a JSON array of ids to text.")
    var decode = false

    @Flag(help: "With --decode, leave out special tokens.")
    var skipSpecialTokens = false

    func validate() throws {
        guard (model == nil) != (tokenizer == nil) else { throw usage("give exactly one of them", "--model, --tokenizer") }
        guard (text == nil) != (textFile == nil) else { throw usage("give exactly one of them", "--text, --text-file") }
        if decode && special { throw usage("only encoding adds special tokens; --decode keeps the ids given", "--special") }
        if skipSpecialTokens && !decode { throw usage("only --decode leaves special tokens out", "--skip-special-tokens") }
    }

    func run() throws {
        try reportingErrors {
            let tok: Tokenizer
            if let model { tok = try Tokenizer(modelDirectory: modelURL(model)) } else { tok = try Tokenizer(contentsOf: URL(fileURLWithPath: tokenizer!)) }
            var input: String
            if let text { input = text } else {
                guard let data = FileManager.default.contents(atPath: textFile!) else { throw CLIError("\(textFile!): cannot read") }
                guard let s = String(data: data, encoding: .utf8) else { throw CLIError("\(textFile!): not UTF-8 text") }
                input = s
            }
            if decode {
                guard let ids = try? JSONDecoder().decode([Int].self, from: Data(input.utf8)) else {
                    throw CLIError("\(textFile ?? "--text"): expected a JSON array of integer token ids")
                }
                if let bad = ids.first(where: { $0 < 0 || $0 >= tok.vocabSize }) {
                    throw CLIError("token id \(bad) is outside the vocabulary (0..<\(tok.vocabSize))")
                }
                print(try tok.decode(ids, skipSpecialTokens: skipSpecialTokens), terminator: "")
                return
            }
            let ids = try tok.encode(input, addSpecialTokens: special)
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        }
    }
}
