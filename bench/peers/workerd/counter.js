// A Cloudflare Durable Object holding a counter in its storage: the peer of
// praas's builtin `counter` in experiment 7 of the benchmarks. Served by
// workerd with config.capnp; POST /NAME increments counter NAME.
export class Counter {
  constructor(ctx, env) {
    this.ctx = ctx;
  }

  async fetch() {
    const n = ((await this.ctx.storage.get("count")) ?? 0) + 1;
    // The output gate holds the response until the write is committed.
    await this.ctx.storage.put("count", n);
    return new Response(String(n));
  }
}

export default {
  async fetch(request, env) {
    const name = new URL(request.url).pathname.slice(1) || "counter";
    return env.COUNTER.get(env.COUNTER.idFromName(name)).fetch(request);
  },
};
