// Starts dynalite (in memory) on 127.0.0.1 and a port the OS chooses, prints that port, and exits when the
// parent closes our stdin (so it never outlives the Python process that started it).
const dynalite = require("dynalite");

const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`payment-examples-engine-ready ${server.address().port}\n`);
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
process.on("SIGTERM", () => process.exit(0));
