import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add what pytest-benchmark leaves out: CPU model, GPU, library versions, flags."""
    import tensorflow as tf

    from tfp_vae.environment import capture

    env = capture("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0", True)
    machine_info["tfp_vae"] = {k: env[k] for k in ("cpu_model", "cpu_count", "gpus", "cuda_version", "cudnn_version",
                                                    "versions", "tf32", "git")}
