"""Source kind -> reader class. Imported lazily by ``reader_for``."""

from pipelines.sources.coco import CocoReader
from pipelines.sources.conceptual import ConceptualCaptionsReader, Img2datasetReader
from pipelines.sources.image_folder import ImageFolderReader
from pipelines.sources.imagenet import ImageNetReader
from pipelines.sources.openimages import OpenImagesReader
from pipelines.sources.sbu import SbuReader
from pipelines.sources.text import BookCorpusReader, OpenWebTextReader, WikipediaReader
from pipelines.sources.visual_genome import VisualGenomeReader

READERS = {
    "coco": CocoReader,
    "image_folder": ImageFolderReader,
    "visual_genome": VisualGenomeReader,
    "conceptual_captions": ConceptualCaptionsReader,
    "img2dataset": Img2datasetReader,
    "sbu": SbuReader,
    "openimages": OpenImagesReader,
    "imagenet21k": ImageNetReader,
    "bookcorpus": BookCorpusReader,
    "wikipedia": WikipediaReader,
    "openwebtext": OpenWebTextReader,
}
