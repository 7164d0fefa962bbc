// Reads a JSON array of TraceQL queries on stdin; prints a JSON array of
// {query, ok, error} using @grafana/lezer-traceql (Grafana's TraceQL grammar).
import { parser } from "@grafana/lezer-traceql";

const input = await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
});
const results = JSON.parse(input).map((query) => {
  const tree = parser.parse(query);
  let error = null;
  tree.iterate({
    enter(node) {
      if (node.type.isError && error === null) {
        error = `syntax error at ${node.from}: ${JSON.stringify(query.slice(node.from, node.from + 20))}`;
      }
    },
  });
  return { query, ok: error === null, error };
});
process.stdout.write(JSON.stringify(results));
