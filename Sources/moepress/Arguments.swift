import ArgumentParser
import ArgumentParserToolInfo
import Foundation

/// A usage error: one line `error: <problem> (<option or argument>)` and exit 64.
struct UsageError: Error, CustomStringConvertible {
    let problem: String
    let subject: String
    init(_ problem: String, _ subject: String) { self.problem = problem; self.subject = subject }
    var description: String { "\(problem) (\(subject))" }
}

/// A `ValidationError` in the one-line form: the problem, then the option or argument it concerns.
func usage(_ problem: String, _ subject: String) -> ValidationError { ValidationError(UsageError(problem, subject).description) }

/// The command line as the user typed it, checked against the commands' own definitions (ArgumentParser's
/// tool description, so a new option or command is covered without a list here) before ArgumentParser parses
/// it: an unknown command or option is named with the closest valid one, and a negative number after an
/// option that takes a value is read as that value (`--ratio -0.1`), where ArgumentParser would see an option.
enum Arguments {
    /// Every command's definition, as `--experimental-dump-help` prints it.
    static func tool() -> CommandInfoV0 {
        guard let info = try? JSONDecoder().decode(ToolInfoV0.self, from: Data(MoEPress._dumpHelp().utf8)) else {
            preconditionFailure("ArgumentParser's tool description does not decode")
        }
        return info.command
    }

    /// Names every command accepts that its definition does not list.
    static let builtIn: Set<String> = ["help", "version", "experimental-dump-help", "generate-completion-script"]

    /// `args` (without the program name) normalised for ArgumentParser, or the first usage problem.
    static func normalise(_ args: [String]) throws(UsageError) -> [String] {
        var command = tool()
        var i = 0
        // The command path: words naming subcommands, up to the first option.
        while i < args.count, let subs = command.subcommands, !subs.isEmpty, !args[i].hasPrefix("-") {
            guard let next = subs.first(where: { $0.commandName == args[i] }) else {
                let names = subs.map(\.commandName)
                throw UsageError("unknown command, did you mean '\(closest(args[i], names))'?", args[i])
            }
            command = next
            i += 1
        }
        let arguments = command.arguments ?? []
        func argument(long name: String) -> ArgumentInfoV0? {
            arguments.first { $0.names?.contains { $0.kind == .long && $0.name == name } ?? false }
        }
        var out = Array(args[..<i])
        while i < args.count {
            let a = args[i]
            i += 1
            if a == "--" { out += args[(i - 1)...]; break }
            if a.hasPrefix("--") {
                let body = a.dropFirst(2)
                let name = String(body.prefix { $0 != "=" })
                let hasValue = body.contains("=")
                guard let info = argument(long: name) else {
                    if builtIn.contains(name) { out.append(a); continue }
                    let names = arguments.flatMap { $0.names ?? [] }.filter { $0.kind == .long }.map { "--" + $0.name }
                    throw UsageError(names.isEmpty ? "unknown option" : "unknown option, did you mean '\(closest("--" + name, names))'?", "--" + name)
                }
                guard info.kind == .option, !hasValue else { out.append(a); continue }
                // The option's value: taken as it is when it is a negative number, so it is not read as an option.
                if i < args.count, isNegativeNumber(args[i]) {
                    out.append("--\(name)=\(args[i])")
                    i += 1
                    continue
                }
                out.append(a)
                if info.parsingStrategy == .upToNextOption {
                    while i < args.count, !args[i].hasPrefix("-") || isNegativeNumber(args[i]) { out.append(args[i]); i += 1 }
                } else if i < args.count, !args[i].hasPrefix("-") {
                    out.append(args[i]); i += 1
                }
                continue
            }
            if a.hasPrefix("-"), a.count > 1, !isNegativeNumber(a) {
                let shorts = arguments.flatMap { $0.names ?? [] }.filter { $0.kind == .short }.map { "-" + $0.name }
                guard shorts.contains(a) || a == "-h" else {
                    let names = arguments.flatMap { $0.names ?? [] }.map { ($0.kind == .long ? "--" : "-") + $0.name }
                    throw UsageError(names.isEmpty ? "unknown option" : "unknown option, did you mean '\(closest(a, names))'?", a)
                }
            }
            out.append(a)
        }
        return out
    }

    static func isNegativeNumber(_ s: String) -> Bool {
        guard s.hasPrefix("-"), s.count > 1 else { return false }
        let rest = s.dropFirst()
        return Double(rest) != nil || ["inf", "nan", "infinity"].contains(rest.lowercased())
    }

    /// The candidate closest to `word` by edit distance (ties: the first listed).
    static func closest(_ word: String, _ candidates: [String]) -> String {
        candidates.min { distance(word, $0) < distance(word, $1) } ?? ""
    }

    /// Levenshtein distance over characters.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in a.indices {
            var diagonal = row[0]
            row[0] = i + 1
            for j in b.indices {
                let above = row[j + 1]
                row[j + 1] = min(above + 1, row[j] + 1, diagonal + (a[i] == b[j] ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }

    /// ArgumentParser's message for a parse or validation error, as one line in the `problem (subject)` form.
    static func oneLine(_ error: any Error) -> String {
        let message = MoEPress.message(for: error)
        let first = message.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? message
        // ArgumentParser's own messages name the argument in quotes: move it to the end.
        let patterns: [(String, String)] = [
            (#"^Missing expected argument '([^' ]+)[^']*'$"#, "missing required option"),
            (#"^Missing value for '([^' ]+)[^']*'$"#, "missing value"),
            (#"^The value '([^']*)' is invalid for '([^' ]+)[^']*'(.*)$"#, "invalid value"),
            (#"^Unexpected argument '([^']*)'$"#, "unexpected argument"),
            (#"^(\d+) unexpected arguments: (.*)$"#, "unexpected arguments"),
        ]
        for (pattern, problem) in patterns {
            guard let re = try? NSRegularExpression(pattern: pattern),
                  let m = re.firstMatch(in: first, range: NSRange(first.startIndex..., in: first)) else { continue }
            func group(_ k: Int) -> String { Range(m.range(at: k), in: first).map { String(first[$0]) } ?? "" }
            switch problem {
            case "invalid value":
                let hint = group(3).trimmingCharacters(in: CharacterSet(charactersIn: ". "))
                return "invalid value '\(group(1))'\(hint.isEmpty ? "" : "; " + lowerFirst(hint)) (\(group(2)))"
            case "unexpected arguments": return "unexpected arguments (\(group(2)))"
            default: return "\(problem) (\(group(1)))"
            }
        }
        return lowerFirst(first.hasSuffix(".") ? String(first.dropLast()) : first)
    }

    static func lowerFirst(_ s: String) -> String {
        guard let c = s.first, c.isUppercase, s.dropFirst().first?.isLowercase ?? true else { return s }
        return c.lowercased() + s.dropFirst()
    }
}
