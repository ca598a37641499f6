import asyncio, cProfile, pstats, subprocess, sys, time, socket
import httpx
import flowtracker as ft

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

async def main():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._servers", "aiohttp", "untraced", str(port)], cwd="/work/main")
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    await client.get(f"http://127.0.0.1:{port}/"); break
                except Exception:
                    await asyncio.sleep(0.1)
            tracker = ft.Tracker(exporters=[])
            async with tracker:
                ft.instrument("httpx")
                for _ in range(300):
                    async with ft.span("root"):
                        await client.get(f"http://127.0.0.1:{port}/")
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(3000):
                    async with ft.span("root"):
                        await client.get(f"http://127.0.0.1:{port}/")
                prof.disable()
                ft.uninstrument("httpx")
        st = pstats.Stats(prof); st.sort_stats("tottime")
        rows = []
        for (f, l, n), (cc, nc, tt, ct, _) in st.stats.items():
            if "flowtracker" in f:
                rows.append((tt / 3000 * 1e6, ct / 3000 * 1e6, nc / 3000, f"{f.split('flowtracker/')[-1]}:{l} {n}"))
        rows.sort(reverse=True)
        for tt, ct, nc, name in rows[:15]:
            print(f"{tt:6.2f} own  {ct:6.2f} cum  {nc:4.1f}/call  {name}")
    finally:
        proc.terminate()
asyncio.run(main())
