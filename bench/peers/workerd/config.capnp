# workerd configuration for the Durable Object counter of experiment 7.
# The harness runs it as
#   workerd serve config.capnp --socket-addr http=127.0.0.1:PORT --directory-path storage=DIR
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .counterWorker),
    (name = "storage", disk = (path = "/tmp/praas-bench-workerd", writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "main"),
  ],
);

const counterWorker :Workerd.Worker = (
  modules = [
    (name = "counter.js", esModule = embed "counter.js"),
  ],
  compatibilityDate = "2024-09-23",
  durableObjectNamespaces = [
    (className = "Counter", uniqueKey = "praas-bench-counter", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "storage"),
  bindings = [
    (name = "COUNTER", durableObjectNamespace = "Counter"),
  ],
);
