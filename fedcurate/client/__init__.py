"""Site side: the Flower ClientApp (thin) and the site pipeline that calls fedcurate.common."""
