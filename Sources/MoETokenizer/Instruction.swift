import MoEJSON
import Foundation

/// One instruction-following example, as the JSONL files of healing data and of the instruction evaluation hold
/// them: `{"instruction": …, "response": …[, "input": …]}` (`"output"` is read as the response, Alpaca style).
/// Training and evaluation format it with MoEITS's template, `Instruction:\n{instruction}\n\nResponse:\n`, the
/// input appended to the instruction after a blank line.
public struct InstructionExample: Sendable, Equatable {
    public static let promptTemplate = "Instruction:\n{instruction}\n\nResponse:\n"
    public var instruction: String
    public var input: String?
    public var response: String
    /// Where it was read from (`file:line`), for error messages.
    public var source: String

    public init(instruction: String, input: String? = nil, response: String, source: String = "") {
        self.instruction = instruction; self.input = input; self.response = response; self.source = source
    }

    /// The prompt the model sees before the response.
    public var prompt: String {
        InstructionExample.promptTemplate.replacingOccurrences(of: "{instruction}", with: instruction + (input.map { "\n\n" + $0 } ?? ""))
    }

    /// Reads a JSONL file (blank lines skipped); every problem names the file and line. `limit` keeps the first N.
    public static func load(_ url: URL, limit: Int? = nil) throws -> [InstructionExample] {
        guard let data = FileManager.default.contents(atPath: url.path), let text = String(data: data, encoding: .utf8) else {
            throw DataFileError("\(url.path): cannot read as UTF-8 text")
        }
        return try parse(text, path: url.path, limit: limit)
    }

    /// The examples of a JSONL text read from `path` (for messages; a part of a file from `TextSplit` starts at its line 1).
    public static func parse(_ text: String, path: String, limit: Int? = nil) throws -> [InstructionExample] {
        var out: [InstructionExample] = []
        // Every field is checked before any work: a wrong type is refused with its file, line and key, never ignored.
        for (n, obj) in try JSON.lines(text, limit: limit, problem: { DataFileError("\(path):\($0): \($1)") }) {
            func text(_ key: String, optional: Bool = false) throws -> String? {
                guard let v = obj[key], !(optional && v.isNull) else { return nil }
                guard let s = v.string else { throw DataFileError("\(path):\(n): \"\(key)\" should be a string, not \(v.kindName)") }
                return s
            }
            guard let instruction = try text("instruction") else {
                throw DataFileError("\(path):\(n): expected a JSON object with string fields \"instruction\" and \"response\"")
            }
            guard let response = try obj["response"] != nil ? text("response") : text("output") else {
                throw DataFileError("\(path):\(n): expected a JSON object with string fields \"instruction\" and \"response\"")
            }
            let input = try text("input", optional: true).flatMap { $0.isEmpty ? nil : $0 }
            out.append(InstructionExample(instruction: instruction, input: input, response: response, source: "\(path):\(n)"))
        }
        return out
    }
}

/// A data file (training or evaluation text) that cannot be used; the message names the file and line.
public struct DataFileError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
