"""The tools built on the client library, as an operator uses them: a bad
flag is one line and exit status 2 in every tool, fb-inject --frames 0 rides
out a Redis restart, fb-processor prints progress only when something
changed, fb-bench --mode heartbeats --interval-ms 500 passes; and the README
shows the example as it is."""
import os
import signal
import subprocess
import time
import unittest

import harness
from harness import IntegrationTest, wait_for

TOOLS = ("fb-inject", "fb-processor", "fb-bench", "fb-routebench")


class ToolsTest(IntegrationTest):

    def run_tool(self, name, *args, timeout=60):
        return subprocess.run([harness.fb_binary(name)] + list(args), capture_output=True,
                              text=True, timeout=timeout)

    def test_flag_errors_are_one_line(self):
        for tool in TOOLS:
            for args, words in ((["--no-such-flag"], "unknown option --no-such-flag"),
                                (["--frames"] if tool != "fb-processor" else ["--id"],
                                 "missing value for option"),
                                (["--frames", "many"] if tool != "fb-processor"
                                 else ["--capacity", "many"], "is not an integer")):
                p = self.run_tool(tool, *args)
                with self.subTest(tool=tool, args=args):
                    self.assertEqual(p.returncode, 2, p.stderr)
                    lines = p.stderr.strip().split("\n")
                    self.assertEqual(len(lines), 1, "more than one line: %r" % p.stderr)
                    self.assertTrue(lines[0].startswith(tool + ": "), lines[0])
                    self.assertIn(words, lines[0])
                    self.assertEqual(p.stdout, "")

    def spawn(self, name, args, env=None):
        log = os.path.join(self.tmp, name + ".log")
        out = open(log, "wb")
        self.addCleanup(out.close)
        p = subprocess.Popen([harness.fb_binary(name)] + args, stdout=out,
                             stderr=subprocess.STDOUT, env=env)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(10)))
        return p, log

    def test_inject_forever_rides_out_a_redis_restart(self):
        redis = self.start_redis(persistent=True)
        r = self.client(redis)
        p, log = self.spawn("fb-inject", ["--redis-url", redis.url, "--frames", "0",
                                          "--rate", "500"])
        wait_for(lambda: r.command("XLEN", "frames:metadata") > 200, 10, what="first frames")
        redis.shutdown()
        time.sleep(1.0)
        self.assertIsNone(p.poll(), "fb-inject stopped when Redis went away:\n"
                          + harness.read_text(log))
        redis.start()
        r2 = self.client(redis)
        before = r2.command("XLEN", "frames:metadata")
        wait_for(lambda: r2.command("XLEN", "frames:metadata") > before + 200, 15,
                 what="frames written after Redis came back")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        text = harness.read_text(log)
        self.assertIn("reconnecting", text)
        self.assertIn("connected to Redis again", text)

    def test_processor_is_quiet_while_idle(self):
        redis = self.start_redis()
        r = self.client(redis)
        p, log = self.spawn("fb-processor", ["--id", "idle-1", "--capabilities", "person",
                                             "--api", "none", "--redis-url", redis.url,
                                             "--nats-url", "none"])
        wait_for(lambda: "consuming" in harness.read_text(log), 10, what="processor started")
        time.sleep(2.5)
        self.assertNotIn("processed", harness.read_text(log), "progress lines while idle")
        harness.add_frames(r, [{"frame_id": "q-%d" % i, "camera_id": "c"} for i in range(20)],
                           stream="frames:ready:idle-1")
        wait_for(lambda: "processed 20 " in harness.read_text(log), 10, what="one progress line")
        time.sleep(2.5)
        lines = [l for l in harness.read_text(log).split("\n") if "processed" in l]
        self.assertEqual(len(lines), 1, "one line for one change: %r" % lines)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)

    def test_readme_shows_the_example_as_it_is(self):
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(root, "examples", "processor.c")) as f:
            example = f.read().rstrip("\n")
        with open(os.path.join(root, "README.md")) as f:
            readme = f.read()
        self.assertLess(len(example.split("\n")), 60, "the example is over 60 lines")
        section = readme[readme.index("## Writing a processor in C"):]
        self.assertIn("```c\n" + example + "\n```", section)
        self.assertIn("pkg-config --cflags --libs framebuffer-client", section)

    def test_bench_baseline_and_consume_ignore_a_gateway(self):
        """The README's $B carries --gateway; the modes without one run anyway."""
        redis = self.start_redis()
        gw = harness.fb_binary("frame-buffer")
        for mode in ("baseline", "consume"):
            p = self.run_tool("fb-bench", "--redis-url", redis.url, "--gateway", gw, "--mode", mode,
                              "--frames", "5000", timeout=120)
            with self.subTest(mode=mode):
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertIn("--gateway is not used", p.stderr)
                self.assertIn("RESULT {", p.stdout)
        self.assertRegex(p.stdout, r'"ratio":[0-9.]+')

    def test_bench_heartbeats_at_500_ms(self):
        redis = self.start_redis()
        nats = self.start_nats()
        p = self.run_tool("fb-bench", "--redis-url", redis.url, "--nats-url", nats.url,
                          "--gateway", harness.fb_binary("frame-buffer"), "--mode", "heartbeats",
                          "--interval-ms", "500", "--processors", "200", "--seconds", "3",
                          timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn('"healthy":200,"stale":0,"dead":0', p.stdout)


if __name__ == "__main__":
    unittest.main()
