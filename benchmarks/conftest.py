import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add what pytest-benchmark leaves out: CPU model and code-generating ISA, GPU, library
    versions, flags."""
    from tfp_vae.backends import get_backend
    from tfp_vae.environment import capture
    from tfp_vae.errors import ConfigError

    info = {}
    for name in ("jax", "tensorflow"):  # the last one installed names the machine's common fields
        try:
            backend = get_backend(name)
        except ConfigError:
            continue
        env = capture(backend, backend.configure("auto", False))
        info.update(
            {
                k: env[k]
                for k in (
                    "cpu_model",
                    "cpu_count",
                    "cpu",
                    "gpus",
                    "cuda_version",
                    "cudnn_version",
                    "versions",
                    "tf32",
                    "git",
                )
            }
        )
        info.setdefault("framework_versions", {}).update(env["framework_versions"])
    machine_info["tfp_vae"] = info
