"""NeRF math for generative lifting (seed 000 ch. 3): cameras, rays, field, rendering
(rays and chunks: `render`; whole views and pixel subsets from cameras: `views`).

Pure, differentiable JAX functions; conventions are fixed in each module's
docstring (cameras: OpenGL camera-to-world, looking down -z; rays: t is depth
along the optical axis; render: bins with edges, exact slab compositing).
"""
from fdm.nerf.cameras import (
    PoseErrors, Similarity, average_pose, candidate_cameras, candidate_positions,
    candidate_signs, look_at, make_c2w, orbit_path, pose_errors, pose_from_axis_angle,
    rodrigues, rotation_angle_deg, rotation_from_position, spiral_path, umeyama)
from fdm.nerf.field import NeRFMLP, positional_encoding
from fdm.nerf.rays import Rays, generate_rays, ndc_rays, rays_from_pixels
from fdm.nerf.render import (
    RenderOutput, composite, render_image, render_rays, render_rays_hierarchical,
    sample_pdf, stratified_bins)
from fdm.nerf.views import RenderSettings, ViewGeometry, render_pixels, render_views

__all__ = [
    "NeRFMLP", "PoseErrors", "Rays", "RenderOutput", "RenderSettings", "Similarity",
    "ViewGeometry", "average_pose", "candidate_cameras", "candidate_positions",
    "candidate_signs", "composite", "generate_rays", "look_at", "make_c2w", "ndc_rays",
    "orbit_path", "pose_errors", "pose_from_axis_angle", "positional_encoding",
    "rays_from_pixels", "render_image", "render_pixels", "render_rays",
    "render_rays_hierarchical", "render_views", "rodrigues", "rotation_angle_deg",
    "rotation_from_position", "sample_pdf", "spiral_path", "stratified_bins", "umeyama",
]
