import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What an input folder's files are at one moment: each regular file's name, size, modification time and inode
/// (a replaced file has a new inode, a rewritten one a new time). A run takes it when it starts and checks it at
/// each stage boundary and before an output is committed, so a shard replaced or rewritten during the run is an
/// error naming the file, never a result that mixes two models. Subfolders are not followed.
public struct FolderFingerprint: Sendable, Equatable {
    public let folder: URL
    let files: [String: [Int]]

    public init(_ folder: URL) throws {
        self.folder = folder.standardizedFileURL
        files = try Self.scan(self.folder)
    }

    static func scan(_ folder: URL) throws -> [String: [Int]] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else {
            throw CheckpointError(file: folder.path, "cannot list the folder")
        }
        var out: [String: [Int]] = [:]
        for n in names {
            var st = stat()
            guard stat(folder.appendingPathComponent(n).path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            out[n] = [Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec), Int(st.st_ino)]
        }
        return out
    }

    /// Throws, naming the first file that appeared, went or changed since the fingerprint was taken.
    public func verifyUnchanged(_ when: String) throws {
        let now = try Self.scan(folder)
        for name in Set(files.keys).union(now.keys).sorted() where files[name] != now[name] {
            let what = files[name] == nil ? "appeared" : now[name] == nil ? "was removed" : "was replaced or rewritten"
            throw CheckpointError(file: folder.appendingPathComponent(name).path,
                                  "\(what) during the run (noticed \(when)); the results would mix two versions of the input, so the run stops (run it again)")
        }
    }
}

/// Deletes a folder so that a kill never leaves it half-deleted under its name: it is first renamed to a hidden
/// `.<name>.trash-<pid>-<n>` beside it (one atomic step), then removed. A kill in between leaves only that hidden
/// folder, which `sweepTrash` removes on a later run.
public func removeAtomically(_ url: URL) {
    let fm = FileManager.default
    guard fm.fileExists(atPath: url.path) else { return }
    let trash = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).trash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    if rename(url.path, trash.path) == 0 {
        try? fm.removeItem(at: trash)
    } else {
        try? fm.removeItem(at: url)
    }
}

/// Removes what `removeAtomically` left behind in `folder` when a kill interrupted it.
public func sweepTrash(in folder: URL) {
    let fm = FileManager.default
    for name in (try? fm.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasPrefix(".") && name.contains(".trash-") {
        try? fm.removeItem(at: folder.appendingPathComponent(name))
    }
}
