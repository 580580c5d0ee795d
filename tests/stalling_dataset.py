"""A TFDS dataset whose preparation never ends, as a download over a failing network: its work
runs in a thread that is not a daemon, as TFDS's downloads do, which Python's exit waits for."""

import threading
import time

import tensorflow_datasets as tfds

STARTED = "stalling_download: preparing"


class StallingDownload(tfds.core.GeneratorBasedBuilder):
  """Registered as `stalling_download` on import."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(8, 8, 3)),
          "label": tfds.features.ClassLabel(num_classes=2),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    download = threading.Thread(target=time.sleep, args=(600,))
    download.start()
    print(STARTED, flush=True)
    download.join()
    return {}

  def _generate_examples(self):
    yield from ()
