/* The page's only way to Baton: the `baton` CLI with -o json, run by the Cockpit bridge
   (cockpit.spawn) with the session's environment (BATON_NATS*: the operator's key). */
/* global cockpit */

/** A failed `baton` command: the CLI's own one-line message, never a stack trace. */
export class BatonFailure extends Error {
    constructor(message, exitStatus, output) {
        super(message);
        this.exitStatus = exitStatus;
        this.output = output; // stdout, e.g. a failed pre-flight report (exit 1)
    }
}

function failureMessage(ex, args) {
    if (ex.problem === "not-found")
        return "the baton command is not installed for this session (is it on PATH?)";
    const text = (ex.message || "").trim();
    const usage = text.split("\n").filter(line => line.startsWith("Error: "));
    if (usage.length) // click's usage errors: the error line, not the usage text around it
        return usage.map(line => line.slice("Error: ".length)).join("\n");
    if (text)
        return text.split("\n").filter(line => line.trim()).map(line => line.replace(/^baton: /, ""))
                .join("\n");
    return `baton ${args[0]} failed (${ex.problem || "exit " + ex.exit_status})`;
}

/** Run `baton ARGS -o json`; resolve with its parsed output, or reject with a BatonFailure. */
export function run(args) {
    return new Promise((resolve, reject) => {
        let out = "";
        const proc = cockpit.spawn(["baton", ...args, "-o", "json"], { err: "message" });
        proc.stream(chunk => { out += chunk });
        proc.then(() => {
            try {
                resolve(out.trim() ? JSON.parse(out) : null);
            } catch (e) {
                reject(new BatonFailure(`baton ${args[0]} printed no JSON`, 0, out));
            }
        }).catch(ex => reject(new BatonFailure(failureMessage(ex, args), ex.exit_status, out)));
    });
}

/** Parse the JSON a command printed before it failed (a failed check report), or null. */
export function outputOf(failure) {
    try {
        return failure.output && failure.output.trim() ? JSON.parse(failure.output) : null;
    } catch (e) {
        return null;
    }
}

/**
 * Follow `baton ARGS -o json` (one JSON message per line) until it ends:
 * onMessage(message) per line; onEnd(failure or null) once. Returns the process (close() stops it).
 */
export function stream(args, onMessage, onEnd) {
    let pending = "";
    const proc = cockpit.spawn(["baton", ...args, "-o", "json"], { err: "message" });
    proc.stream(chunk => {
        pending += chunk;
        const lines = pending.split("\n");
        pending = lines.pop();
        for (const line of lines) {
            if (!line.trim())
                continue;
            try {
                onMessage(JSON.parse(line));
            } catch (e) {
                console.warn("baton: skipped a line that is not JSON", line, e);
            }
        }
    });
    proc.then(() => onEnd(null))
            .catch(ex => onEnd(new BatonFailure(failureMessage(ex, args), ex.exit_status, "")));
    return proc;
}
