// A Restate virtual object holding a counter in its state: the peer of
// praas's builtin `counter` in experiment 7 of the benchmarks.
//
//   node counter.mjs PORT
//
// Restate's TypeScript SDK uses Promise.withResolvers, which Node 20 lacks.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

// Imported after the polyfill (static imports would run first).
const restate = await import("@restatedev/restate-sdk");

const counter = restate.object({
  name: "counter",
  handlers: {
    // add increments the counter and returns the new value.
    add: async (ctx) => {
      const n = ((await ctx.get("count")) ?? 0) + 1;
      ctx.set("count", n);
      return n;
    },
  },
});

const port = Number(process.argv[2] || 9080);
restate.endpoint().bind(counter).listen(port);
